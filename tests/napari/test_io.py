"""The npe2 reader, writers and sample data, through a real viewer."""
from __future__ import annotations

import numpy as np
import pytest

from napari_refsam._reader import EXPRESSIONS_KEY, SOURCE_KEY, napari_get_reader

pytestmark = pytest.mark.gui


def test_reader_opens_mp4_lazily(make_napari_viewer, mp4, clip):
    import dask.array as da

    viewer = make_napari_viewer()
    layers = viewer.open(str(mp4), plugin="napari-refsam")
    assert len(layers) == 1
    layer = layers[0]
    assert isinstance(layer.data, da.Array)
    assert layer.data.shape == clip.frames.shape and layer.rgb
    assert layer.data.chunks[0] == (1,) * len(clip.frames)  # one chunk per frame
    assert layer.metadata[SOURCE_KEY] == str(mp4.resolve())
    frame = np.asarray(layer.data[5]).astype(int)
    assert np.abs(frame - clip.frames[5]).mean() < 6  # H.264 is lossy, but close


def test_reader_folder_and_refusals(tmp_path, clip):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip.frames[:4]):
        Image.fromarray(frame).save(folder / f"{i}.png")
    (data, meta, kind), = napari_get_reader(str(folder))(str(folder))
    assert kind == "image" and data.shape == (4, *clip.frames.shape[1:])
    assert np.array_equal(np.asarray(data[2]), clip.frames[2])
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader([str(folder), str(folder)]) is None
    other = tmp_path / "store.zarr"  # a folder of something else: left to other readers
    other.mkdir()
    (other / ".zarray").write_text("{}")
    (other / "0.0").write_bytes(b"\0" * 8)
    assert napari_get_reader(str(other)) is None


def test_empty_folder_says_it_has_no_frames(make_napari_viewer, tmp_path, notes):
    """An empty folder is no one's to read: ours names the problem (napari said "refused")."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\0")
    viewer = make_napari_viewer()
    assert viewer.open(str(empty), plugin="napari-refsam") == [] and len(viewer.layers) == 0
    assert "has no frames" in notes.messages() and str(empty) in notes.messages()


def test_undecodable_frame_shows_blank_and_warns_once(make_napari_viewer, tmp_path, notes):
    """A truncated mp4 whose index (written first: faststart) lists frames that are not there."""
    from src_model.video.source import open_video, write_video

    rng = np.random.default_rng(0)
    good = write_video(tmp_path / "full.mp4", rng.integers(0, 255, (24, 64, 96, 3), dtype=np.uint8))
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with open_video(cut) as source:
        bad = []
        for t in range(len(source)):
            try:
                source.get_raw(t)
            except Exception:  # noqa: BLE001
                bad.append(t)
    assert bad and bad[0] > 0, "the truncated file should open and miss its last frames"

    viewer = make_napari_viewer()
    layer = viewer.open(str(cut), plugin="napari-refsam")[0]
    assert np.asarray(layer.data[bad[0] - 1]).any()
    viewer.dims.set_current_step(0, bad[-1])  # napari slices it: no exception
    blank = np.asarray(layer.data[bad[0]])
    assert blank.shape == layer.data.shape[1:] and not blank.any()
    np.asarray(layer.data[bad[-1]])
    warnings = [m for severity, m in notes.all() if "cannot be read" in m]
    assert len(warnings) == 1 and str(cut) in warnings[0] and f"frame {bad[-1]}" in warnings[0]


def test_unreadable_file_is_a_notification(make_napari_viewer, tmp_path, notes):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    viewer = make_napari_viewer()
    layers = viewer.open(str(bad), plugin="napari-refsam")
    assert layers == [] and len(viewer.layers) == 0
    assert "broken.mp4" in notes.messages()


@pytest.mark.parametrize("name", ["labels.tif", "labels.json", "labels.png"])
def test_writers_roundtrip(make_napari_viewer, tmp_path, clip, name):
    from src_model.export import read_labels

    viewer = make_napari_viewer()
    layer = viewer.add_labels(clip.labels.astype(np.uint16), name="RefSAM labels",
                              metadata={EXPRESSIONS_KEY: {1: ["the first thing"], 2: ["the second"]}})
    written = viewer.layers.save(str(tmp_path / name), selected=False, plugin="napari-refsam")
    assert written, "no writer ran"
    labels, expressions = read_labels(written[0])
    assert np.array_equal(labels, clip.labels)
    assert expressions[1] == ["the first thing"]
    # and the reader opens the export again as a Labels layer with its expressions
    back = viewer.open(written[0], plugin="napari-refsam")[0]
    assert back._type_string == "labels" and np.array_equal(back.data, clip.labels)
    assert back.metadata[EXPRESSIONS_KEY][2] == ["the second"]
    assert layer.name == "RefSAM labels"


@pytest.mark.parametrize("name, labels, message", [
    ("big.png", np.full((2, 8, 8), 300, np.uint16), "palette PNG frames hold object ids up to 255, but these labels "
                                                    "hold id 300; export to .tif or .json instead"),
    ("neg.tif", np.full((2, 8, 8), -1, np.int32), "labels frame 0 holds negative id -1"),
    ("four.json", np.ones((2, 3, 8, 8), np.uint8), "must be a (T, H, W) volume"),
])
def test_labels_a_format_cannot_hold_raise_the_reason(make_napari_viewer, tmp_path, name, labels, message):
    """layer.save (the README's console recipe; File > Save runs the same writer): the engine's
    reason is raised, not swallowed by npe2 into "not a valid writer" and an empty result."""
    from src_model.errors import RefSAMError

    layer = make_napari_viewer().add_labels(labels)
    with pytest.raises(RefSAMError) as info:
        layer.save(str(tmp_path / name), plugin="napari-refsam")
    assert message in str(info.value) and not isinstance(info.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_saving_to_a_folder_path_writes_no_hidden_file(make_napari_viewer, tmp_path, clip):
    """napari turns save("folder/") into "folder/.tif": refused, naming what to write instead."""
    from src_model.errors import RefSAMError

    layer = make_napari_viewer().add_labels(clip.labels.astype(np.uint16))
    (tmp_path / "pngs").mkdir()
    for folder in ("pngs", "newdir"):
        with pytest.raises(RefSAMError, match=r"names no file, only an ending; name the file, e\.g\. labels\.tif, "
                                              r"or name it labels\.png"):
            layer.save(f"{tmp_path / folder}/", plugin="napari-refsam")
    assert [p.name for p in tmp_path.iterdir()] == ["pngs"] and list((tmp_path / "pngs").iterdir()) == []


def test_a_file_type_picked_in_the_save_dialog_gives_its_ending(make_napari_viewer, tmp_path, clip):
    """File > Save with "TIFF label stack" (or the JSON type) and the name typed without an ending:
    napari hands the writer the bare name, and it still writes that file type."""
    from napari.plugins._npe2 import write_layers

    from src_model.export import read_labels

    layer = make_napari_viewer().add_labels(clip.labels.astype(np.uint16))
    for kind, ending in (("tiff", ".tif"), ("coco", ".json")):
        written, _ = write_layers(str(tmp_path / f"labels_{kind}"), [layer], plugin_name="napari-refsam",
                                  writer=_writer_contribution(f"write_labels_{kind}"))
        assert written == [str(tmp_path / f"labels_{kind}{ending}")]
        assert np.array_equal(read_labels(written[0])[0], clip.labels)


def _writer_contribution(command: str):
    from npe2 import PluginManager

    return next(w for w in PluginManager.instance().iter_compatible_writers(["labels"])
                if w.command == f"napari-refsam.{command}")


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-refsam", "synthetic_referring_video")
    layer = viewer.layers[-1]
    assert layer.name == "Synthetic referring video" and layer.rgb and layer.data.ndim == 4
    expressions = layer.metadata[EXPRESSIONS_KEY]
    assert expressions and all(isinstance(t, str) for texts in expressions.values() for t in texts)


def test_widget_is_in_the_plugins_and_layers_menus(make_napari_viewer):
    from napari._app_model import get_app_model

    make_napari_viewer()
    menus = get_app_model().menus
    for menu in ("napari/plugins", "napari/layers/segment", "napari/layers/track"):
        ids = [item.command.id for item in menus.get_menu(menu) if hasattr(item, "command")]
        assert "napari-refsam.make_widget" in ids, menu


def test_saving_labels_over_their_own_video_is_refused(make_napari_viewer, qtbot, tmp_path, clip, tiny_model):
    """The labels of a TIFF video saved to that TIFF's own path: refused (as the CLI refuses it),
    and the video file stays as it was."""
    import tifffile

    from refsam_napari_helpers import open_with_widget, segment

    video = tmp_path / "stack.tif"
    tifffile.imwrite(video, clip.frames, photometric="rgb")
    before = video.read_bytes()
    viewer = make_napari_viewer()
    widget = open_with_widget(viewer, video, tiny_model)
    segment(qtbot, widget)
    with pytest.raises(FileExistsError, match="is or holds the input video"):
        widget.labels_layer.save(str(video), plugin="napari-refsam")
    assert video.read_bytes() == before
    written = widget.labels_layer.save(str(tmp_path / "labels.tif"), plugin="napari-refsam")
    assert written and (tmp_path / "labels.tif").is_file()
