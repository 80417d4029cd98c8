"""TIFF stacks read one frame at a time (see :mod:`src_model.video.readers` for the reader surface)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from src_model.errors import VideoReadError


class TiffReader:
    """TIFF stack (multi-page, ImageJ hyperstack, OME) read one frame at a time.

    The time axis is the only non-spatial, non-channel axis longer than 1 (T, Z, I, Q, ...); a file
    without one is a 1-frame video. The channel axis is S (samples, e.g. RGB) or else C. Uncompressed
    contiguous data is memory-mapped; otherwise only the pages of the requested frame are decoded.

    A stack written one image at a time (``TiffWriter.write`` per frame) holds one series per image;
    consecutive series of the first one's shape and type are its frames, as ImageJ opens them.
    """

    def __init__(self, path: Path):
        import tifffile

        self.path = path
        self.name = path.stem
        try:
            self._tif = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, ...
            raise VideoReadError(f"cannot read TIFF '{path}': {exc}") from exc
        try:
            self._setup(tifffile)
        except Exception as exc:
            self._tif.close()
            if isinstance(exc, VideoReadError):
                raise
            raise VideoReadError(f"cannot read TIFF '{path}': {exc}") from exc

    def _setup(self, tifffile) -> None:
        if not self._tif.series:
            raise VideoReadError(f"TIFF '{self.path}' has no frames (no image series)")
        series = self._tif.series[0]
        axes, shape = series.axes.upper(), tuple(series.shape)
        if "Y" not in axes or "X" not in axes:
            raise VideoReadError(f"TIFF '{self.path}': axes {axes!r} have no Y and X")
        channel = "S" if "S" in axes else ("C" if "C" in axes else None)
        others = [a for a, n in zip(axes, shape) if a not in ("Y", "X", channel) and n > 1]
        # One image per series: the series that follow with its shape are the other frames.
        self._frame_series = self._alike_series(series) if not others else [series]
        if len(self._frame_series) > 1:
            axes, shape = "T" + axes, (len(self._frame_series), *shape)
            others = ["T"]
        if len(self._tif.series) > len(self._frame_series):  # e.g. pages of another size: not frames
            kept, total = len(self._frame_series), len(self._tif.series)
            which = "only the first" if kept == 1 else f"the first {kept}, one image each,"
            warnings.warn(f"TIFF '{self.path}' holds {total} image series; {which} (axes {axes}, shape "
                          f"{shape}) make the video, the {total - kept} after of another shape or type "
                          "are left out", stacklevel=3)
        if len(others) > 1:
            raise VideoReadError(
                f"TIFF '{self.path}': axes {axes!r} with shape {shape} have several non-spatial "
                f"axes longer than 1 ({', '.join(others)}); expected one time axis (T, Z or a page axis)")
        self._axes, self._shape = axes, shape
        self._time = axes.index(others[0]) if others else None
        self.num_frames = shape[self._time] if others else 1
        # Axes of one frame, in stored order, and the order (Y, X[, channel]) to return them in.
        rest = [a for k, a in enumerate(axes) if k != self._time]
        self._squeeze = tuple(k for k, a in enumerate(rest) if a not in ("Y", "X", channel))
        kept = [a for k, a in enumerate(rest) if k not in self._squeeze]
        self._order = tuple(kept.index(a) for a in ("Y", "X", channel) if a is not None)
        height, width = shape[axes.index("Y")], shape[axes.index("X")]
        channels = shape[axes.index(channel)] if channel else 1
        self.frame_shape = (height, width) if channels == 1 else (height, width, channels)
        self.dtype = np.dtype(series.dtype)
        if self.dtype.kind not in "buif":  # complex or structured pixels are no image to show
            raise VideoReadError(f"TIFF '{self.path}': pixels of type {self.dtype} are not an image "
                                 "(expected integers, floats or bools)")
        self._series = series
        self._memmap = None
        if len(self._frame_series) > 1:
            return  # each frame is its own series, read by itself
        if series.dataoffset is not None:
            try:  # uncompressed and contiguous: the OS pages in only what a frame touches
                self._memmap = tifffile.memmap(self.path, series=0, mode="r").reshape(shape)
            except Exception:
                self._memmap = None
        if self._memmap is None:
            page_shape = tuple(series.keyframe.shape)
            grid = shape[: len(shape) - len(page_shape)]
            if shape[len(grid):] != page_shape or int(np.prod(grid)) != len(series.pages):
                raise VideoReadError(
                    f"TIFF '{self.path}': cannot map {len(series.pages)} pages of shape {page_shape} "
                    f"onto series shape {shape} (axes {axes!r})")
            self._grid = grid

    def _alike_series(self, first) -> list:
        """``first`` and the series right after it with the same axes, shape and type."""
        alike = [first]
        for series in self._tif.series[1:]:
            if (series.axes, series.shape, series.dtype) != (first.axes, first.shape, first.dtype):
                break
            alike.append(series)
        return alike

    def read(self, i: int) -> np.ndarray:
        try:
            block = self._read_block(i)
        except VideoReadError:
            raise
        except Exception as exc:
            raise VideoReadError(f"TIFF '{self.path}': cannot read frame {i}: {exc}") from exc
        if self._squeeze:
            block = block.reshape([n for k, n in enumerate(block.shape) if k not in self._squeeze])
        block = np.transpose(block, self._order).reshape(self.frame_shape)
        if not block.dtype.isnative:  # big-endian files: hand out native-order frames
            block = block.astype(block.dtype.newbyteorder("="))
        return block

    def _read_block(self, i: int) -> np.ndarray:
        """Frame ``i`` with all other axes still in stored order (time axis removed)."""
        if len(self._frame_series) > 1:
            return self._frame_series[i].asarray()
        index = [slice(None)] * len(self._shape)
        if self._time is not None:
            index[self._time] = i
        if self._memmap is not None:
            return np.asarray(self._memmap[tuple(index)])
        grid = self._grid
        pages = np.arange(int(np.prod(grid))).reshape(grid)[tuple(index[: len(grid)])]
        page_shape = self._shape[len(grid):]
        out = np.empty(pages.shape + page_shape, self.dtype)
        flat = out.reshape((-1,) + page_shape)
        for k, page in enumerate(pages.ravel()):
            flat[k] = self._series.pages[int(page)].asarray()
        if self._time is not None and self._time >= len(grid):  # time inside a page (rare)
            return out[(Ellipsis,) + tuple(index[len(grid):])]
        return out

    def close(self) -> None:
        self._memmap = None
        self._frame_series = []
        self._tif.close()
