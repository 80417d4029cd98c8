"""The Ref-YouTube-VOS / Ref-DAVIS17 folder layout: the one writer and the readers.

Layout written (and read, with ``split=None``)::

    root/JPEGImages/<video>/<frame>.jpg
    root/Annotations/<video>/<frame>.png      palette PNG, pixel value = object id
    root/meta_expressions.json                {"videos": {video: {"expressions": {"0": {"exp": str,
                                                "obj_id": "1"}}, "frames": ["00000", ...]}}}

The released Ref-YouTube-VOS puts a split's frames under ``root/<split>/`` and its expressions in
``root/meta_expressions/<split>/meta_expressions.json``; ``read_dataset(root, split)`` reads that,
and also ``root/<split>/meta_expressions.json``. Ref-DAVIS17 (``read_ref_davis``) keeps the DAVIS
folders ``JPEGImages/480p`` and ``Annotations/480p`` and ships its expressions as four text files.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from src_model.atomic import OutputExistsError, atomic_dir, atomic_file, check_replaceable_dir
from src_model.errors import DatasetFormatError

META_NAME = "meta_expressions.json"
# Ref-DAVIS17: 2 annotators x (first frame only | whole video), in the order converted datasets use.
DAVIS_SETS = {"annot1_first": "Davis17_annot1.txt", "annot1_full": "Davis17_annot1_full_video.txt",
              "annot2_first": "Davis17_annot2.txt", "annot2_full": "Davis17_annot2_full_video.txt"}
# Names in the text files that differ from the DAVIS folder names.
_DAVIS_RENAMES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map, (256, 3) uint8: id i gets the bits of i spread over R, G, B."""
    ids = np.arange(256)
    pal = np.zeros((256, 3), np.int64)
    for bit in range(8):
        for channel in range(3):
            pal[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return pal.astype(np.uint8)


@dataclass
class RefVideo:
    """One video of a referring dataset. Frames are read on demand.

    expressions: [(exp_id, text, obj_id)]; obj_id is None only where the split ships no
    object ids (Ref-YouTube-VOS valid/test). expression_sets: exp_id -> set name (Ref-DAVIS17).
    """
    name: str
    frame_names: list[str]
    image_paths: list[Path]
    annotation_paths: list[Path | None]
    expressions: list[tuple[str, str, int | None]]
    expression_sets: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_names)

    @property
    def object_ids(self) -> list[int]:
        return sorted({o for _, _, o in self.expressions if o is not None})

    def texts(self, obj_id: int) -> list[str]:
        return [text for _, text, o in self.expressions if o == obj_id]

    def _indices(self, indices) -> list[int]:
        idx = list(range(len(self))) if indices is None else [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < len(self):
                raise IndexError(f"video {self.name!r} has {len(self)} frames; frame {i} does not exist")
        return idx

    def load_frames(self, indices=None) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB for ``indices`` (default all frames)."""
        out = [_read_rgb(self.image_paths[i]) for i in self._indices(indices)]
        shapes = {f.shape for f in out}
        if len(shapes) > 1:
            raise DatasetFormatError(f"video {self.name!r}: frames differ in size {sorted(shapes)}")
        return np.stack(out)

    def load_labels(self, indices=None) -> np.ndarray:
        """(T, H, W) uint16 object ids; zeros for frames without an annotation."""
        out = []
        for i in self._indices(indices):
            with Image.open(self.image_paths[i]) as im:  # header only: the size to match
                width, height = im.size
            path = self.annotation_paths[i]
            out.append(np.zeros((height, width), np.uint16) if path is None
                       else _read_label(path, (height, width), self.image_paths[i]))
        return np.stack(out)


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: cannot read image ({exc})") from None


def _read_label(path: Path, hw: tuple[int, int], image: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I;16", "I"):
                raise DatasetFormatError(f"{path}: annotation must be a palette or grey PNG of ids, got mode {im.mode}")
            arr = np.asarray(im)
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read annotation ({exc})") from None
    if arr.shape != hw:
        raise DatasetFormatError(f"{path}: annotation is {arr.shape[1]}x{arr.shape[0]} (WxH) but its frame "
                                 f"{image.name} is {hw[1]}x{hw[0]}")
    return arr.astype(np.uint16)


# ----------------------------------------------------------------------------- reading
def _load_meta(path: Path) -> dict:
    """The {"videos": {...}} object of a meta_expressions.json, checked for its top-level shape."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: expressions file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise DatasetFormatError(f"{path}: expected an object with a \"videos\" object at the top")
    return meta


def _parse_entry(meta_path: Path, name: str, entry) -> tuple[list[str], list[tuple[str, str, int | None]]]:
    """Frame names and expressions of one video entry, with errors that name the key."""
    where = f"{meta_path}: video {name!r}"
    if not isinstance(entry, dict) or "frames" not in entry or "expressions" not in entry:
        raise DatasetFormatError(f"{where}: needs keys \"frames\" and \"expressions\"")
    frames, exps = entry["frames"], entry["expressions"]
    if not isinstance(frames, list) or not all(isinstance(f, str) and f for f in frames):
        raise DatasetFormatError(f"{where}: \"frames\" must be a list of frame names")
    if not isinstance(exps, dict):
        raise DatasetFormatError(f"{where}: \"expressions\" must be an object keyed by expression id")
    out = []
    for exp_id, e in exps.items():
        if not isinstance(e, dict) or not isinstance(e.get("exp"), str):
            raise DatasetFormatError(f"{where}, expression {exp_id!r}: needs a string \"exp\"")
        obj = e.get("obj_id")
        try:
            obj = None if obj is None else int(obj)
        except (TypeError, ValueError):
            raise DatasetFormatError(f"{where}, expression {exp_id!r}: obj_id {obj!r} is not an integer") from None
        out.append((str(exp_id), e["exp"], obj))
    return frames, out


def _build_video(name: str, frames: list[str], expressions, image_dir: Path, ann_dir: Path | None) -> RefVideo:
    images = [image_dir / name / f"{f}.jpg" for f in frames]
    if not (image_dir / name).is_dir():
        raise DatasetFormatError(f"{image_dir / name}: frame folder of video {name!r} is missing")
    for p in images:
        if not p.is_file():
            raise DatasetFormatError(f"{p}: frame listed for video {name!r} is missing")
    anns = [None] * len(frames)
    if ann_dir is not None and (ann_dir / name).is_dir():
        anns = [p if p.is_file() else None for p in (ann_dir / name / f"{f}.png" for f in frames)]
    return RefVideo(name, list(frames), images, anns, list(expressions))


def _locate(root: Path, split: str | None) -> tuple[Path, Path]:
    """(folder holding JPEGImages/Annotations, meta_expressions.json) for a root and split."""
    if split is None:
        return root, root / META_NAME
    base = root / split
    for meta in (root / "meta_expressions" / split / META_NAME, base / META_NAME):
        if meta.is_file():
            return base, meta
    raise DatasetFormatError(f"{root}: no expressions for split {split!r} (looked for "
                             f"meta_expressions/{split}/{META_NAME} and {split}/{META_NAME})")


def read_dataset(root, split: str | None = None) -> dict[str, RefVideo]:
    """All videos of a Ref-YouTube-VOS-style dataset, in file order: {name: RefVideo}."""
    root = Path(root)
    base, meta_path = _locate(root, split)
    if split is None and not meta_path.is_file() and (root / "meta_expressions").is_dir():
        raise DatasetFormatError(f"{meta_path}: not found; this looks like the released layout, "
                                 f"pass split='train' or split='valid'")
    meta = _load_meta(meta_path)
    if not (base / "JPEGImages").is_dir():
        raise DatasetFormatError(f"{base / 'JPEGImages'}: folder of frames is missing")
    out = {}
    for name, entry in meta["videos"].items():
        frames, exps = _parse_entry(meta_path, name, entry)
        out[name] = _build_video(name, frames, exps, base / "JPEGImages", base / "Annotations")
    return out


def read_video_labels(root, name: str, split: str | None = None) -> tuple[np.ndarray, dict[int, list[str]]]:
    """(labels (T, H, W) uint16, {obj_id: [texts]}) of one video, reading only its own files."""
    root = Path(root)
    base, meta_path = _locate(root, split)
    meta = _load_meta(meta_path)
    if name not in meta["videos"]:
        raise DatasetFormatError(f"{meta_path}: no video named {name!r}")
    frames, exps = _parse_entry(meta_path, name, meta["videos"][name])
    video = _build_video(name, frames, exps, base / "JPEGImages", base / "Annotations")
    texts: dict[int, list[str]] = {}
    for _, text, obj in exps:
        texts.setdefault(obj, []).append(text)
    return video.load_labels(), texts


_DAVIS_LINE = re.compile(r'^(\S+)\s+(\d+)\s+"(.*)"\s*$')


def _read_davis_text(path: Path) -> list[tuple[str, int, str]]:
    """Lines ``video obj_id "expression"``; annotator 2's files are Latin-1, not UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _DAVIS_LINE.match(line.strip())
        if not m:
            raise DatasetFormatError(f"{path}:{n}: expected 'video obj_id \"expression\"', got {line.strip()!r}")
        out.append((_DAVIS_RENAMES.get(m[1], m[1]), int(m[2]), m[3]))
    return out


def read_ref_davis(root, split: str | None = None) -> dict[str, RefVideo]:
    """Ref-DAVIS17 videos with each expression's set in ``RefVideo.expression_sets``.

    Expressions come from the four text files (in ``root/davis_text_annotations/`` or ``root``)
    when present, else from ``root/meta_expressions/valid/meta_expressions.json`` (the converted
    form: four consecutive expressions per object, in ``DAVIS_SETS`` order). Frames are in
    ``root/JPEGImages/480p`` (or ``root/valid/JPEGImages`` for the converted form). ``split``
    ("train", "val"/"valid") keeps the videos listed in ``root/ImageSets/2017/<split>.txt``.
    """
    root = Path(root)
    image_dir, ann_dir = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
    keep = None
    if split is not None:
        listing = root / "ImageSets" / "2017" / f"{'val' if split == 'valid' else split}.txt"
        if not listing.is_file():
            raise DatasetFormatError(f"{listing}: video list for split {split!r} not found")
        keep = [v.strip() for v in listing.read_text().splitlines() if v.strip()]
    text_dir = next((d for d in (root / "davis_text_annotations", root)
                     if any((d / f).is_file() for f in DAVIS_SETS.values())), None)
    per_video: dict[str, list[tuple[str, int, str]]] = {}  # video -> [(set, obj, text)]
    if text_dir is not None:
        for set_name, file_name in DAVIS_SETS.items():
            if (text_dir / file_name).is_file():
                for video, obj, text in _read_davis_text(text_dir / file_name):
                    per_video.setdefault(video, []).append((set_name, obj, text))
        frames_of = {}
    else:
        meta_path = root / "meta_expressions" / "valid" / META_NAME
        if not meta_path.is_file():
            raise DatasetFormatError(f"{root}: no Ref-DAVIS17 expressions (neither the davis_text_annotations "
                                     f"files nor meta_expressions/valid/{META_NAME})")
        if not image_dir.is_dir() and (root / "valid" / "JPEGImages").is_dir():
            image_dir, ann_dir = root / "valid" / "JPEGImages", root / "valid" / "Annotations"
        frames_of = {}
        for name, entry in _load_meta(meta_path)["videos"].items():
            frames, exps = _parse_entry(meta_path, name, entry)
            frames_of[name] = frames
            sets = list(DAVIS_SETS)
            grouped = len(exps) % 4 == 0 and all(len({o for _, _, o in exps[i:i + 4]}) == 1
                                                  for i in range(0, len(exps), 4))
            per_video[name] = [(sets[i % 4] if grouped else "", o, t) for i, (_, t, o) in enumerate(exps)]
    out = {}
    for name in sorted(per_video) if keep is None else keep:
        if name not in per_video:
            raise DatasetFormatError(f"{root}: video {name!r} of split {split!r} has no expressions")
        frames = frames_of.get(name)
        if frames is None:
            if not (image_dir / name).is_dir():
                raise DatasetFormatError(f"{image_dir / name}: frame folder of video {name!r} is missing")
            frames = sorted(p.stem for p in (image_dir / name).glob("*.jpg"))
        # Sort by object, then set, so ids are stable whatever the file order.
        items = sorted(per_video[name], key=lambda e: (e[1], list(DAVIS_SETS).index(e[0]) if e[0] else 0))
        exps = [(str(i), text, obj) for i, (_, obj, text) in enumerate(items)]
        video = _build_video(name, frames, exps, image_dir, ann_dir)
        video.expression_sets = {str(i): s for i, (s, _, _) in enumerate(items) if s}
        out[name] = video
    return out


# ----------------------------------------------------------------------------- writing
def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or re.search(r"[/\\\x00]", name):
        raise DatasetFormatError(f"video name {name!r} must be a plain folder name")
    return name


def _numbered(suffix: str):
    """Names of the frame files ``write_video`` writes (00000.jpg, ...): an overwrite replaces nothing else."""
    return lambda name: re.fullmatch(r"\d+" + re.escape(suffix), name) is not None


def check_can_add(root, name: str, overwrite: bool = False) -> None:
    """Raise now what ``write_video`` would raise for adding video ``name`` to the dataset at ``root``:
    an unreadable meta_expressions.json, a name already taken (unless ``overwrite``), or a frame
    folder holding files the writer did not put there."""
    root, name = Path(root), _check_name(name)
    meta_path = root / META_NAME
    meta = _load_meta(meta_path) if meta_path.exists() else {"videos": {}}
    targets = (root / "JPEGImages" / name, root / "Annotations" / name)
    if not overwrite and (name in meta["videos"] or any(t.exists() for t in targets)):
        raise OutputExistsError(f"{root}: video {name!r} already exists; pass overwrite=True (CLI: --overwrite) "
                                "to replace it, or add it under another name (CLI: --name)")
    for target, suffix in zip(targets, (".jpg", ".png")):
        check_replaceable_dir(target, _numbered(suffix))


def write_video(root, name: str, frames, labels, expressions: dict[int, list[str]],
                overwrite: bool = False, jpeg_quality: int = 95) -> Path:
    """Add one video to the dataset at ``root`` (created if needed) and return its frame folder.

    frames: (T, H, W, 3) uint8, or anything indexable with ``len`` giving such frames (read one at
    a time); labels: (T, H, W) integer ids 0..255; expressions: {obj_id: [text, ...]}.
    The frame and annotation folders are each written atomically, then meta_expressions.json is
    rewritten atomically with this video added; other videos' files are not touched.
    """
    root, name = Path(root), _check_name(name)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise DatasetFormatError(f"video {name!r}: labels must be (T, H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise DatasetFormatError(f"video {name!r}: labels must hold integer ids, got {labels.dtype}")
    if labels.size and (labels.max() > 255 or labels.min() < 0):
        bad = int(labels.max()) if labels.max() > 255 else int(labels.min())
        frame = int(np.argwhere(labels == bad)[0, 0])
        raise DatasetFormatError(f"video {name!r}: object id {bad} in frame {frame} does not fit a palette PNG "
                                 f"(ids must be 0..255)")
    if not hasattr(frames, "__len__") or not hasattr(frames, "__getitem__"):
        frames = list(frames)
    if len(frames) != len(labels):
        raise DatasetFormatError(f"video {name!r}: {len(frames)} frames but {len(labels)} label frames")
    exps = _expression_entries(name, expressions)
    check_can_add(root, name, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / META_NAME
    targets = (root / "JPEGImages" / name, root / "Annotations" / name)
    for t in targets:
        t.parent.mkdir(exist_ok=True)
    frame_names = [f"{t:05d}" for t in range(len(labels))]
    palette = davis_palette().reshape(-1).tolist()
    with atomic_dir(targets[0], overwrite=overwrite, replaceable=_numbered(".jpg")) as tmp:
        for t, fname in enumerate(frame_names):
            rgb = _as_rgb(frames[t], name, t, labels.shape[1:])
            # 4:4:4 chroma: subsampling would smear the colour of small objects into the background.
            Image.fromarray(rgb).save(tmp / f"{fname}.jpg", quality=int(jpeg_quality), subsampling=0)
    with atomic_dir(targets[1], overwrite=overwrite, replaceable=_numbered(".png")) as tmp:
        for t, fname in enumerate(frame_names):
            png = Image.fromarray(labels[t].astype(np.uint8))
            png.putpalette(palette)  # makes it a "P" image, as DAVIS and YouTube-VOS store masks
            png.save(tmp / f"{fname}.png")
    # Re-read just before writing so a video added meanwhile by another writer is kept.
    meta = _load_meta(meta_path) if meta_path.exists() else {"videos": {}}
    meta["videos"][name] = {"expressions": exps, "frames": frame_names}
    with atomic_file(meta_path, overwrite=True, mode="w") as handle:
        json.dump(meta, handle)
    return targets[0]


def _expression_entries(name: str, expressions) -> dict[str, dict[str, str]]:
    entries = {}
    for obj, texts in sorted(dict(expressions).items(), key=lambda kv: int(kv[0])):
        if int(obj) < 1:
            raise DatasetFormatError(f"video {name!r}: expression object id {obj!r} must be >= 1 (0 is background)")
        for text in [texts] if isinstance(texts, str) else texts:
            if not isinstance(text, str) or not text.strip():
                raise DatasetFormatError(f"video {name!r}: object {obj} has an empty or non-text expression {text!r}")
            entries[str(len(entries))] = {"exp": text, "obj_id": str(int(obj))}
    return entries


def _as_rgb(frame, name: str, t: int, hw: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise DatasetFormatError(f"video {name!r}, frame {t}: expected (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    if arr.shape[:2] != tuple(hw):
        raise DatasetFormatError(f"video {name!r}, frame {t}: frame is {arr.shape[:2]} but labels are {tuple(hw)}")
    return np.ascontiguousarray(arr)
