"""Per-format frame readers behind :class:`src_model.video.source.VideoSource`.

Every reader has the same small surface, and returns frames *as stored* (dtype and channel count
untouched, channels last):

    reader.path          Path or None          reader.name     short display name
    reader.num_frames    T                     reader.frame_shape   (H, W) or (H, W, C)
    reader.dtype         numpy dtype           reader.read(i) -> ndarray of frame_shape, 0 <= i < T
    reader.close()                             (folder readers also have reader.files)

Readers are not thread-safe; ``VideoSource`` serialises all calls with one lock. None of them
loads the whole video: arrays are indexed per frame, TIFFs are memory-mapped or read page by page,
folders open one image per frame, video files keep one decoder open (see :class:`PyAVReader`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from src_model.errors import VideoReadError
from src_model.video.pyav_reader import PyAVReader
from src_model.video.recent_frames import RecentFrames
from src_model.video.tiff_reader import TiffReader

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg")
GIF_EXTENSIONS = (".gif",)
TIFF_EXTENSIONS = (".tif", ".tiff")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")  # frames inside a folder
SINGLE_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")              # one file = a 1-frame video
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, both byte orders


def natural_key(name: str) -> list:
    """Sort key that orders "2.png" before "10.png" (digit runs compare as numbers)."""
    # re.split with a capturing group alternates text, digits, text, ... so equal positions of two
    # keys always hold the same type and never compare int with str.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


# ------------------------------------------------------------------------------------ arrays


class ArrayReader:
    """(T, H, W) or (T, H, W, C) numpy / np.memmap / dask / zarr-like array, indexed per frame."""

    def __init__(self, array, name: str = "array"):
        shape = tuple(array.shape)
        if any(not isinstance(s, (int, np.integer)) for s in shape) or any(s != s for s in shape):
            raise VideoReadError(
                f"{name}: unknown shape {shape} (for dask, call compute_chunk_sizes())")
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(array.dtype)
        if len(shape) not in (3, 4):
            raise VideoReadError(f"{name}: expected shape (T, H, W) or (T, H, W, C), got {shape}")
        if len(shape) == 4 and shape[3] not in (1, 3, 4):
            # A (T, 3, H, W) array would otherwise be reported as having W channels.
            hint = ("; it looks channels-first (T, C, H, W): pass np.moveaxis(array, 1, -1)"
                    if shape[1] in (1, 3, 4) and shape[3] > 4 else f" ({shape[3]} channels)")
            raise VideoReadError(f"{name}: expected 1, 3 or 4 channels last in (T, H, W, C), got shape {shape}{hint}")
        if not (dtype.kind in "buif"):
            raise VideoReadError(f"{name}: expected a numeric or bool dtype, got {dtype}")
        self._array = array
        self.path = None
        self.name = name
        self.num_frames = shape[0]
        self.frame_shape = shape[1:]
        self.dtype = dtype

    def read(self, i: int) -> np.ndarray:
        try:
            frame = self._array[i]
            if hasattr(frame, "compute"):  # dask (and xarray on dask): compute this frame only
                frame = frame.compute()
            return np.asarray(frame)
        except Exception as exc:
            raise VideoReadError(f"{self.name}: cannot read frame {i}: {exc}") from exc

    def close(self) -> None:
        self._array = None


class SequenceReader:
    """A list/tuple of equally shaped (H, W[, C]) frames."""

    def __init__(self, frames, name: str = "array"):
        if len(frames) == 0:
            raise VideoReadError(f"{name} has no frames (empty list)")
        first = np.asarray(frames[0])
        if first.ndim not in (2, 3):
            raise VideoReadError(
                f"{name}: frame 0 has shape {first.shape}, expected (H, W) or (H, W, C)")
        self._frames = frames
        self.path = None
        self.name = name
        self.num_frames = len(frames)
        self.frame_shape = first.shape
        self.dtype = first.dtype

    def read(self, i: int) -> np.ndarray:
        frame = np.asarray(self._frames[i])
        if frame.shape != self.frame_shape or frame.dtype != self.dtype:
            raise VideoReadError(
                f"{self.name}: frame {i} has shape {frame.shape} {frame.dtype}, expected "
                f"{self.frame_shape} {self.dtype} like frame 0")
        return frame

    def close(self) -> None:
        self._frames = None


# ------------------------------------------------------------------------------------ images (PIL)

# PIL mode -> the mode frames are handed out in. Palette and exotic colour modes become RGB; a
# grey+alpha image becomes grey (alpha is dropped for display and for the model alike).
_PIL_MODES = {"1": "1", "L": "L", "P": "RGB", "PA": "RGB", "LA": "L", "RGB": "RGB", "RGBA": "RGBA",
              "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB",
              "I": "I", "F": "F", "I;16": "I;16", "I;16L": "I;16", "I;16B": "I;16", "I;16N": "I;16"}
_PIL_8BIT = {"1", "L", "RGB", "RGBA"}


def _pil_to_array(image, mode: str) -> np.ndarray:
    if image.mode != mode and not (mode == "I;16" and image.mode.startswith("I;16")):
        image = image.convert(mode)
    array = np.asarray(image)
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _upright_size(image) -> tuple[int, int]:
    """(width, height) as shown: a camera's EXIF orientation 5-8 stores the picture turned a quarter."""
    return image.size[::-1] if _orientation_tag(image) in (5, 6, 7, 8) else image.size


def _orientation_tag(image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))  # EXIF Orientation
    except Exception:  # noqa: BLE001 - unreadable EXIF: as stored
        return 1


def _upright(image):
    """The frame the way photo viewers show it (EXIF orientation applied), as phone photos are stored."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image) if _orientation_tag(image) not in (1, 0) else image


class ImageFolderReader:
    """A folder of .jpg/.jpeg/.png/.tif frames (natural order), or a single image file.

    Sizes and modes come from the file headers at open (PIL does not decode on ``open``), so
    mixed sizes are reported before any frame is used.
    """

    def __init__(self, path: Path, files: list[Path] | None = None):
        from PIL import Image

        self.path = path
        self.name = path.name if path.is_dir() else path.stem
        if files is None:
            files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
                            and not f.name.startswith(".") and f.is_file()),
                           key=lambda f: natural_key(f.name))
        if not files:
            raise VideoReadError(
                f"folder '{path}' has no frames (no {', '.join(IMAGE_EXTENSIONS)} files)")
        self.files = files
        size, modes = None, []
        for f in files:
            try:
                with Image.open(f) as image:
                    this_size, mode = _upright_size(image), image.mode
            except Exception as exc:
                raise VideoReadError(f"cannot read frame {len(modes)} '{f}': {exc}") from exc
            if size is None:
                size = this_size
            elif this_size != size:
                raise VideoReadError(
                    f"frame {len(modes)} '{f.name}' in '{path}' is {this_size[0]}x{this_size[1]} "
                    f"(width x height), expected {size[0]}x{size[1]} like '{files[0].name}'")
            if mode not in _PIL_MODES:
                raise VideoReadError(f"frame {len(modes)} '{f}': unsupported image mode {mode!r}")
            modes.append(_PIL_MODES[mode])
        distinct = set(modes)
        if len(distinct) == 1:
            self._mode = modes[0]
        elif distinct <= _PIL_8BIT:  # mixed 8-bit grey/colour frames: hand all out as RGB
            self._mode = "RGB"
        else:
            k = next(k for k, m in enumerate(modes) if m != modes[0])
            raise VideoReadError(
                f"frame {k} '{files[k].name}' in '{path}' has image mode {modes[k]!r}, expected "
                f"{modes[0]!r} like '{files[0].name}'")
        self.num_frames = len(files)
        self._size = size
        with Image.open(files[0]) as image:
            probe = _pil_to_array(image.crop((0, 0, 1, 1)), self._mode)
        self.dtype = probe.dtype
        self.frame_shape = (size[1], size[0]) + probe.shape[2:]

    def read(self, i: int) -> np.ndarray:
        from PIL import Image

        f = self.files[i]
        try:
            with Image.open(f) as image:
                size = _upright_size(image)
                if size != self._size:  # the file changed since the folder was opened
                    raise VideoReadError(
                        f"frame {i} '{f}' is {size[0]}x{size[1]}, expected {self._size[0]}x{self._size[1]}")
                return _pil_to_array(_upright(image), self._mode)
        except VideoReadError:
            raise
        except Exception as exc:
            raise VideoReadError(f"cannot read frame {i} '{f}': {exc}") from exc

    def close(self) -> None:
        pass


class AnimatedImageReader:
    """Animated GIF or PNG (APNG) via PIL; frames are composited by PIL (disposal, blending,
    transparency) and made RGB."""

    def __init__(self, path: Path, image=None):
        from PIL import Image

        self.path = path
        self.name = path.stem
        try:
            self._image = image or Image.open(path)
            self.num_frames = int(getattr(self._image, "n_frames", 1))
        except Exception as exc:
            raise VideoReadError(f"cannot read {_kind(path)} '{path}': {exc}") from exc
        width, height = self._image.size
        self.frame_shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self._recent = RecentFrames()

    def read(self, i: int) -> np.ndarray:
        frame = self._recent.pop(i)
        if frame is not None:
            return frame
        try:
            if i < self._image.tell():
                # PIL rewinds to frame 0 and composites forward: keep the frames before i that
                # fit the budget, for a backward pass (recent_frames.py).
                height, width, _ = self.frame_shape
                start = max(0, i - self._recent.budget // (height * width * 3))
                for j in range(start, i):
                    self._image.seek(j)
                    self._recent.put(j, np.asarray(self._image.convert("RGB")), height * width * 3)
            self._image.seek(i)
            frame = np.asarray(self._image.convert("RGB"))
        except Exception as exc:
            raise VideoReadError(f"{_kind(self.path)} '{self.path}': cannot read frame {i}: {exc}") from exc
        if frame.shape != self.frame_shape:
            raise VideoReadError(
                f"{_kind(self.path)} '{self.path}': frame {i} has shape {frame.shape}, expected {self.frame_shape}")
        return frame

    def close(self) -> None:
        self._recent.clear()
        self._image.close()


# ------------------------------------------------------------------------------------ video files


def _kind(path: Path) -> str:
    return "GIF" if path.suffix.lower() == ".gif" else "animated PNG"


def _animated_png(path: Path):
    """The open PIL image of an animated PNG (APNG: several frames in one .png), else None."""
    from PIL import Image

    try:
        image = Image.open(path)
    except Exception:  # noqa: BLE001 - not readable here: the image reader names the problem
        return None
    if getattr(image, "n_frames", 1) > 1:
        return image
    image.close()
    return None


def reader_for_path(path: Path):
    """The reader for a file or folder, chosen by extension; VideoReadError when unsupported."""
    if not path.exists():
        raise VideoReadError(f"'{path}' does not exist (file or folder not found)")
    if path.is_dir():
        return ImageFolderReader(path)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise VideoReadError(f"'{path}' is empty (0 bytes): it has no frames")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic in _TIFF_MAGIC:  # a TIFF by content (a misnamed stack would reach FFmpeg as one image)
        return TiffReader(path)
    if suffix in VIDEO_EXTENSIONS:
        return PyAVReader(path)
    if suffix in GIF_EXTENSIONS:
        return AnimatedImageReader(path)
    if suffix in TIFF_EXTENSIONS:
        return TiffReader(path)
    if suffix in SINGLE_IMAGE_EXTENSIONS:
        animated = _animated_png(path) if suffix == ".png" else None
        return AnimatedImageReader(path, animated) if animated else ImageFolderReader(path, files=[path])
    supported = VIDEO_EXTENSIONS + GIF_EXTENSIONS + TIFF_EXTENSIONS + SINGLE_IMAGE_EXTENSIONS
    raise VideoReadError(
        f"'{path}': unsupported file type {suffix or '(no extension)'!r}; supported: "
        f"{', '.join(supported)}, or a folder of {', '.join(IMAGE_EXTENSIONS)} frames")
