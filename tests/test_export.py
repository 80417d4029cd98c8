"""Label exports: bit-exact round trips, metadata, atomicity and clear errors."""
from __future__ import annotations

import errno
import json
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from src_model.atomic import OutputExistsError
from src_model.errors import DatasetFormatError
from src_model.export import EXPORT_FORMATS, format_for_path, read_labels, write_dataset_video, write_labels
from src_model.export import coco as coco_mod
from src_model.export import png as png_mod
from src_model.export import rle as rle_mod
from src_model.data.ytvos import davis_palette
from src_model.export.rle import counts_to_string, decode_rle, encode_rle, string_to_counts

TARGETS = {"tiff": "labels.tif", "coco": "labels.json", "png": "labels/"}


def make_labels(t=5, h=24, w=32, ids=(1, 2, 3), seed=0):
    """Blobs of several ids, an all-zero frame in the middle, and an object that leaves early."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((t, h, w), np.uint32)
    for k, obj in enumerate(ids):
        for frame in range(t):
            y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
            labels[frame, y : y + 4 + k, x : x + 5] = obj
    labels[t // 2] = 0  # empty frame
    labels[t - 1][labels[t - 1] == ids[0]] = 0  # the first object is gone in the last frame
    return labels


def listing(folder):
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["tiff", "coco", "png"])
def test_round_trip_bit_exact_with_expressions(tmp_path, fmt):
    labels = make_labels(ids=(1, 7, 255) if fmt == "png" else (1, 300, 4000))
    expressions = {1: ["the dog jumping", "a brown dög"], int(labels.max()): ["the fence"], 9: ["never visible"]}
    out = write_labels(tmp_path / TARGETS[fmt], labels, expressions, fps=24, video_name="dogs")
    back, exprs = read_labels(out)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    assert exprs == expressions  # includes object 9, which has no pixel in any frame
    assert format_for_path(TARGETS[fmt]) == fmt


@pytest.mark.parametrize("fmt", ["tiff", "coco"])
def test_uint32_ids_up_to_70000(tmp_path, fmt):
    labels = make_labels(ids=(5, 65535, 70000))
    out = write_labels(tmp_path / TARGETS[fmt], labels, {70000: ["big id"]})
    back, exprs = read_labels(out)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    assert exprs == {70000: ["big id"]}


@pytest.mark.parametrize("fmt", ["tiff", "coco", "png"])
def test_all_zero_video_and_no_expressions(tmp_path, fmt):
    labels = np.zeros((3, 10, 12), np.uint8)
    out = write_labels(tmp_path / TARGETS[fmt], labels)
    back, exprs = read_labels(out)
    assert back.shape == (3, 10, 12) and back.dtype == np.uint16 and not back.any()
    assert exprs == {}


@pytest.mark.parametrize("frames", [1, 3, 4])
def test_tiff_three_or_four_frames_are_not_taken_for_rgb(tmp_path, frames):
    import tifffile

    for top in (9, 70000):
        labels = np.zeros((frames, 6, 7), np.uint32)
        labels[:, 1:3, 2:5] = top
        path = write_labels(tmp_path / f"l{top}.tif", labels)
        with tifffile.TiffFile(path) as tif:
            assert tif.series[0].axes in ("TYX", "YX")
            assert tif.pages[0].shape == (6, 7)
        np.testing.assert_array_equal(read_labels(path)[0], labels)


def test_tiff_is_imagej_time_series_with_metadata(tmp_path):
    import tifffile

    labels = make_labels(ids=(1, 2))
    path = write_labels(tmp_path / "l.tif", labels, {1: ["café"]}, fps=25, video_name="v1")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        meta = tif.imagej_metadata
        assert meta["frames"] == len(labels) and meta["fps"] == 25
        assert "object 1: caf" in meta["Info"]
        stored = json.loads(meta["Properties"]["refsam"])
        assert stored == {"expressions": {"1": ["café"]}, "fps": 25.0, "video_name": "v1"}


def test_uint32_tiff_is_plain_tiff_with_json(tmp_path):
    import tifffile

    labels = make_labels(ids=(1, 100000))
    path = write_labels(tmp_path / "l.tiff", labels, {100000: ["x"]})
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_imagej
        assert tif.shaped_metadata[0]["axes"] == "TYX"
        assert tif.shaped_metadata[0]["refsam"]["expressions"] == {"100000": ["x"]}


def test_png_frames_are_davis_palette_images(tmp_path):
    labels = make_labels(ids=(1, 2))
    folder = write_labels(tmp_path / "frames", labels, {2: ["b"]})
    names = listing(folder)
    assert names == [f"{t:05d}.png" for t in range(len(labels))] + ["expressions.json"]
    with Image.open(folder / "00000.png") as image:
        assert image.mode == "P"
        assert bytes(image.getpalette()[:9]) == bytes([0, 0, 0, 128, 0, 0, 0, 128, 0])
        assert image.getpalette()[255 * 3 :] == [224, 224, 192]


def test_png_rejects_ids_above_255_naming_the_id(tmp_path):
    labels = make_labels(ids=(1, 256))
    with pytest.raises(ValueError, match="id 256"):
        write_labels(tmp_path / "frames/", labels)
    assert listing(tmp_path) == []


def test_two_d_labels_are_one_frame(tmp_path):
    frame = np.zeros((5, 6), np.int32)
    frame[1:3, 1:3] = 4
    back, _ = read_labels(write_labels(tmp_path / "one.tif", frame))
    np.testing.assert_array_equal(back, frame[None])


# ---------------------------------------------------------------- streaming


class FrameOnly:
    """An array-like that hands out single frames and refuses to be loaded whole."""

    def __init__(self, data):
        self.data, self.shape, self.dtype = data, data.shape, data.dtype
        self.frames_read = 0

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)):
            raise AssertionError(f"exporter asked for more than one frame: {index!r}")
        self.frames_read += 1
        return self.data[index]

    def __array__(self, *args, **kwargs):
        raise AssertionError("exporter loaded the whole volume")


@pytest.mark.parametrize("fmt", ["tiff", "coco", "png"])
def test_exports_stream_frame_by_frame(tmp_path, fmt):
    labels = make_labels(t=6, ids=(1, 2))
    source = FrameOnly(labels)
    back, _ = read_labels(write_labels(tmp_path / TARGETS[fmt], source))
    np.testing.assert_array_equal(back, labels)


def test_memmapped_labels_stream_to_tiff(tmp_path):
    shape = (40, 48, 64)
    mm = np.lib.format.open_memmap(tmp_path / "labels.npy", mode="w+", dtype=np.uint16, shape=shape)
    for t in range(shape[0]):
        mm[t, t : t + 8, 2 * t % 50 : 2 * t % 50 + 10] = 1 + t % 3
    mm.flush()
    labels = np.load(tmp_path / "labels.npy", mmap_mode="r")
    source = FrameOnly(labels)
    out = write_labels(tmp_path / "labels.tif", source, {1: ["a"], 2: ["b"], 3: ["c"]})
    assert source.frames_read == 2 * shape[0]  # one pass to check ids, one to write
    back, _ = read_labels(out)
    np.testing.assert_array_equal(back, labels)


# ---------------------------------------------------------------- overwrite and atomicity


@pytest.mark.parametrize("fmt", ["tiff", "coco", "png"])
def test_overwrite_refused_then_allowed(tmp_path, fmt):
    first, second = make_labels(seed=1), make_labels(seed=2)
    target = tmp_path / TARGETS[fmt]
    write_labels(target, first)
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_labels(target, second)
    np.testing.assert_array_equal(read_labels(target)[0], first)
    write_labels(target, second, overwrite=True)
    np.testing.assert_array_equal(read_labels(target)[0], second)
    assert listing(tmp_path) == [target.name]  # no temporary or backup left


class FailsAtFrame(FrameOnly):
    """Raises a full-disk error when frame ``bad`` is read the second time (during the write)."""

    def __init__(self, data, bad):
        super().__init__(data)
        self.bad, self.seen = bad, 0

    def __getitem__(self, index):
        if index == self.bad:
            self.seen += 1
            if self.seen == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return super().__getitem__(index)


@pytest.mark.parametrize("fmt", ["tiff", "coco", "png"])
@pytest.mark.parametrize("existing", [False, True])
def test_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch, fmt, existing):
    target = tmp_path / TARGETS[fmt]
    old = make_labels(seed=3)
    if existing:
        write_labels(target, old)
    labels = make_labels(seed=4)
    if fmt == "coco":
        # COCO encodes every frame before it writes; its failure point is the disk itself. A full
        # disk cannot be produced in a test, so the final rename reports ENOSPC.
        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", full_disk)
        source = labels
    else:
        source = FailsAtFrame(labels, bad=3)
    with pytest.raises(OSError) as info:
        write_labels(target, source, overwrite=True)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value) and "No space left" in str(info.value)
    if existing:
        assert listing(tmp_path) == [target.name]
        np.testing.assert_array_equal(read_labels(target)[0], old)
    else:
        assert listing(tmp_path) == []


@pytest.mark.parametrize("fmt", ["tiff", "coco", "png"])
def test_unwritable_folder_is_a_clear_oserror(tmp_path, fmt):
    # Tests run as root, where chmod does not stop writes: make the "folder" a file instead.
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    target = blocker / TARGETS[fmt]
    with pytest.raises(OSError) as info:
        write_labels(target, make_labels())
    assert str(target).rstrip("/") in str(info.value)
    assert listing(tmp_path) == ["not_a_folder"]


def test_missing_parent_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_labels(tmp_path / "nope" / "l.tif", make_labels())


# ---------------------------------------------------------------- bad input


def test_unknown_suffix_names_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match=r"\.tif.*\.json.*'/'"):
        write_labels(tmp_path / "labels.mp4", make_labels())
    assert set(EXPORT_FORMATS) == {"tiff", "coco", "png"}


@pytest.mark.parametrize("name", [".tif", ".TIFF", ".json", ".json/", ".png", ".png.tif"])
def test_a_bare_ending_is_no_file_name(tmp_path, name):
    """Path(".tif").suffix is "": written as asked, this would be a hidden file or PNG folder."""
    with pytest.raises(ValueError, match="names no file, only an ending; name the file, e.g. labels"):
        write_labels(f"{tmp_path}/{name}", make_labels())
    assert listing(tmp_path) == []
    assert write_labels(tmp_path / "x.png.tif", make_labels()).name == "x.png.tif"  # a name before the endings


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.full((2, 3, 3), -1, np.int16), "negative"),
        (np.zeros((2, 3, 3), np.float32), "integer"),
        (np.zeros((2, 2, 3, 3), np.uint8), "shape"),
        (np.zeros((0, 3, 3), np.uint8), "at least one frame"),
    ],
)
def test_bad_labels(tmp_path, labels, message):
    with pytest.raises(ValueError, match=message):
        write_labels(tmp_path / "l.tif", labels)


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "videos": [\n    {"id": 1,,}\n  ]\n}\n')
    with pytest.raises(DatasetFormatError) as info:
        read_labels(path)
    text = str(info.value)
    assert str(path) in text and "line 3" in text and "column" in text


def coco_document(**video):
    base = {"id": 1, "height": 4, "width": 5, "length": 2}
    base.update(video)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    return {
        "videos": [base],
        "annotations": [{"id": 3, "video_id": 1, "segmentations": [encode_rle(mask), None]}],
    }


def write_json(path, document):
    path.write_text(json.dumps(document))
    return path


def test_missing_keys_are_named(tmp_path):
    doc = coco_document()
    del doc["annotations"]
    with pytest.raises(DatasetFormatError, match="'annotations'"):
        read_labels(write_json(tmp_path / "a.json", doc))
    doc = coco_document()
    del doc["videos"][0]["height"]
    with pytest.raises(DatasetFormatError, match="'height'"):
        read_labels(write_json(tmp_path / "b.json", doc))
    doc = coco_document()
    del doc["annotations"][0]["segmentations"]
    with pytest.raises(DatasetFormatError, match=r"annotations\[0\].*'segmentations'"):
        read_labels(write_json(tmp_path / "c.json", doc))


def test_rle_size_must_match_video(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"annotations\[0\] frame 0 has RLE size \[4, 5\].*\[6, 5\]"):
        read_labels(write_json(tmp_path / "a.json", coco_document(height=6)))
    with pytest.raises(DatasetFormatError, match="3 frames"):
        read_labels(write_json(tmp_path / "b.json", coco_document(length=3)))


def test_foreign_youtube_vis_file(tmp_path):
    # Instance id from "id" (no track_id), uncompressed RLE, two videos.
    doc = coco_document()
    doc["annotations"][0]["segmentations"][1] = encode_rle(np.eye(4, 5, dtype=bool), compressed=False)
    doc["videos"].append({"id": 2, "height": 1, "width": 1, "file_names": ["a.jpg"]})
    path = write_json(tmp_path / "vis.json", doc)
    with pytest.raises(DatasetFormatError, match="2 videos"):
        read_labels(path)
    labels, exprs = coco_mod.read_coco(path, video_id=1)
    assert labels.shape == (2, 4, 5) and exprs == {}
    assert labels[0].sum() == 3 * 6 and set(np.unique(labels[0])) == {0, 3}
    np.testing.assert_array_equal(labels[1] == 3, np.eye(4, 5, dtype=bool))
    assert coco_mod.read_coco(path, video_id=2)[0].shape == (1, 1, 1)


def test_corrupt_rle_is_a_format_error(tmp_path):
    doc = coco_document()
    doc["annotations"][0]["segmentations"][0]["counts"] = [3, 4]  # 7 pixels, not 20
    with pytest.raises(DatasetFormatError, match="frame 0.*7 pixels"):
        read_labels(write_json(tmp_path / "a.json", doc))


def save_png(path, array, mode=None):
    image = Image.fromarray(array)
    if mode == "P":
        image.putpalette(davis_palette().reshape(-1).tolist())
    image.save(path)


def test_png_frame_of_wrong_size_names_file_and_sizes(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    save_png(folder / "00000.png", np.zeros((10, 12), np.uint8), "P")
    save_png(folder / "00001.png", np.zeros((11, 12), np.uint8), "P")
    with pytest.raises(DatasetFormatError) as info:
        read_labels(folder)
    text = str(info.value)
    assert "00001.png" in text and "12x11" in text and "12x10" in text and "00000.png" in text


def test_png_rgb_frame_is_rejected(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    save_png(folder / "00000.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetFormatError, match="00000.png.*RGB"):
        read_labels(folder)


def test_png_folder_reads_greyscale_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in (1, 2, 10):
        save_png(folder / f"{t}.png", np.full((3, 3), t, np.uint8))
    labels, exprs = read_labels(folder)
    assert [int(f[0, 0]) for f in labels] == [1, 2, 10] and exprs == {}


def test_png_bad_expressions_file(tmp_path):
    folder = write_labels(tmp_path / "frames", make_labels(ids=(1,)), {1: ["a"]})
    (folder / png_mod.META_NAME).write_text('{"expressions": ')
    with pytest.raises(DatasetFormatError, match="expressions.json.*line 1"):
        read_labels(folder)


def test_tiff_reader_errors(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "float.tif", np.zeros((2, 3, 3), np.float32), photometric="minisblack")
    with pytest.raises(DatasetFormatError, match="float32"):
        read_labels(tmp_path / "float.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DatasetFormatError, match="junk.tif"):
        read_labels(tmp_path / "junk.tif")


# ---------------------------------------------------------------- RLE with and without pycocotools


def random_masks():
    rng = np.random.default_rng(5)
    masks = [np.zeros((7, 9), bool), np.ones((7, 9), bool), np.zeros((1, 1), bool), np.ones((1, 13), bool)]
    corner = np.zeros((6, 6), bool)
    corner[0, 0] = True
    masks.append(corner)
    for _ in range(30):
        h, w = rng.integers(1, 60, size=2)
        masks.append(rng.random((h, w)) < rng.random())
    big = np.zeros((480, 854), bool)
    big[100:300, 200:700] = True
    big[150:160, :] = False
    masks.append(big)
    return masks


def test_rle_round_trip_without_pycocotools(monkeypatch):
    monkeypatch.setattr(rle_mod, "_mask_utils", None)
    for mask in random_masks():
        for compressed in (True, False):
            rle = encode_rle(mask, compressed=compressed)
            assert rle["size"] == list(mask.shape)
            np.testing.assert_array_equal(decode_rle(rle), mask)
        runs = encode_rle(mask, compressed=False)["counts"]
        assert string_to_counts(counts_to_string(runs)) == runs


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own numpy-2 notice
def test_rle_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    for mask in random_masks():
        theirs = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        ours = rle_mod.counts_to_string(encode_rle(mask, compressed=False)["counts"])
        assert ours == theirs["counts"].decode("ascii")
        assert encode_rle(mask)["counts"] == ours
        # Our decoder on their string, theirs on ours.
        np.testing.assert_array_equal(decode_rle({"size": theirs["size"], "counts": theirs["counts"]}), mask)
        back = mask_utils.decode({"size": list(mask.shape), "counts": ours.encode("ascii")})
        np.testing.assert_array_equal(back.astype(bool), mask)
        # pycocotools reads our uncompressed form too.
        plain = encode_rle(mask, compressed=False)
        converted = mask_utils.frPyObjects(plain, *plain["size"])
        np.testing.assert_array_equal(mask_utils.decode(converted).astype(bool), mask)
        assert int(mask_utils.area(theirs)) == int(mask.sum())


def test_coco_file_identical_with_and_without_pycocotools(tmp_path, monkeypatch):
    pytest.importorskip("pycocotools")
    labels = make_labels(ids=(1, 2, 300))
    with_c = write_labels(tmp_path / "with.json", labels, {2: ["x"]})
    monkeypatch.setattr(rle_mod, "_mask_utils", None)
    monkeypatch.setattr(coco_mod, "_mask_utils", None)
    without = write_labels(tmp_path / "without.json", labels, {2: ["x"]})
    assert with_c.read_bytes() == without.read_bytes()
    np.testing.assert_array_equal(read_labels(without)[0], labels)


def test_coco_uncompressed_option_and_boxes(tmp_path):
    labels = np.zeros((2, 6, 8), np.uint16)
    labels[0, 1:4, 2:7] = 5
    path = coco_mod.write_coco(tmp_path / "u.json", labels, compressed_rle=False)
    doc = json.loads(path.read_text())
    ann = doc["annotations"][0]
    assert ann["track_id"] == 5 and isinstance(ann["segmentations"][0]["counts"], list)
    assert ann["areas"] == [15, None] and ann["bboxes"] == [[2.0, 1.0, 5.0, 3.0], None]
    assert doc["videos"][0]["length"] == 2 and len(doc["videos"][0]["file_names"]) == 2
    np.testing.assert_array_equal(read_labels(path)[0], labels)


# ---------------------------------------------------------------- dataset export delegation


def test_write_dataset_video_delegates(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("src_model.data.ytvos")
    fake.write_video = lambda *args, **kwargs: calls.append((args, kwargs)) or "done"
    monkeypatch.setitem(sys.modules, "src_model.data.ytvos", fake)
    frames, labels = np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 2, 2), np.uint16)
    assert write_dataset_video(tmp_path, "vid", frames, labels, {1: ["a"]}, overwrite=True) == "done"
    assert calls == [((tmp_path, "vid", frames, labels, {1: ["a"]}), {"overwrite": True})]


def test_write_dataset_video_round_trips_through_the_dataset_reader(tmp_path):
    ytvos = pytest.importorskip("src_model.data.ytvos")
    labels = make_labels(t=3, h=16, w=20, ids=(1, 2)).astype(np.uint8)
    frames = np.zeros((3, 16, 20, 3), np.uint8)
    write_dataset_video(tmp_path / "ds", "vid", frames, labels, {1: ["a cat"], 2: ["a hat"]})
    back, exprs = ytvos.read_video_labels(tmp_path / "ds", "vid")
    np.testing.assert_array_equal(back, labels)
    assert exprs == {1: ["a cat"], 2: ["a hat"]}
