"""Objects of a video session and the checks on what users give to create and correct them.

An object is either a *text* object (a referring expression) or a *prompt* object (a SAM box /
points on one frame, its *anchor*, or a mask, which becomes a keyframe). Keyframes are locked
(H, W) bool masks. Per frame the object also keeps the small state that lets a propagation resume
anywhere: the track token τ_t produced at frame t (C floats) and whether the chain through t
was conditioned on a mask (then the next frame gets the mask on t as a mask prompt).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import PromptError, TextInputError

TEXT, PROMPT = "text", "prompt"


@dataclass
class VideoObject:
    """One tracked object. ``prompt`` is {"frame", "box", "points", "labels"} for prompt objects."""

    id: int
    kind: str
    num_frames: int
    dim: int
    text: str | None = None
    prompt: dict | None = None
    text_prompt: object = None  # TextPrompt with batch 1 on the model device (not saved; re-encoded)
    keyframes: dict[int, np.ndarray] = field(default_factory=dict)
    track: np.ndarray = None    # (T, C) float32: τ_t after decoding frame t
    known: np.ndarray = None    # (T,) bool: track[t] and the mask on t are a valid chain state
    cond: np.ndarray = None     # (T,) bool: the chain through t was conditioned on a mask

    def __post_init__(self):
        if self.track is None:
            self.forget_chain(self.dim)

    def forget_chain(self, dim: int) -> None:
        """Drop the chain state, made by other weights (``dim``: the new model's token size)."""
        self.dim = dim
        self.track = np.zeros((self.num_frames, dim), np.float32)
        self.known = np.zeros(self.num_frames, bool)
        self.cond = np.zeros(self.num_frames, bool)

    @property
    def anchor(self) -> int | None:
        """Frame of the box/points prompt, or None."""
        if self.prompt is None or (self.prompt.get("box") is None and self.prompt.get("points") is None):
            return None
        return int(self.prompt["frame"])

    @property
    def boundaries(self) -> list[int]:
        """Frames where a chain (re)starts from something the user gave: keyframes and the anchor."""
        frames = set(self.keyframes)
        if self.anchor is not None:
            frames.add(self.anchor)
        return sorted(frames)

    def info(self) -> dict:
        return {"kind": self.kind, "text": self.text,
                "prompt": None if self.prompt is None else dict(self.prompt),
                "keyframes": sorted(self.keyframes)}


# ------------------------------------------------------------------------------ checks
def check_frame(frame, num_frames: int, what: str = "frame") -> int:
    if isinstance(frame, (bool, np.bool_)) or not isinstance(frame, (int, np.integer)):
        raise PromptError(f"{what} must be an int frame index, got {frame!r}")
    if not 0 <= frame < num_frames:
        raise PromptError(f"{what} {int(frame)} is out of range: the video has frames 0..{num_frames - 1}")
    return int(frame)


def _numbers(value, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{what} must be numbers, got {value!r}") from None
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{what} must be finite numbers, got {value!r}")
    return arr


def check_box(box, height: int, width: int) -> list[float]:
    """(x0, y0, x1, y1) pixel box with x0 < x1, y0 < y1, clipped to the (height, width) frame
    (with a warning: a box drawn past the edge means the part inside, as in napari); one with
    nothing inside the frame is refused."""
    arr = _numbers(box, "box")
    if arr.shape != (4,):
        raise PromptError(f"box must be (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = given = tuple(arr.tolist())
    if x1 <= x0 or y1 <= y0:
        raise PromptError(f"box {given} is empty or inverted: need x0 < x1 and y0 < y1")
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise PromptError(f"box {given} is outside the {width}x{height} frame "
                          f"(x in 0..{width}, y in 0..{height})")
    if clipped != given:
        warnings.warn(f"box {given} reaches past the {width}x{height} frame; clipped to {clipped}", stacklevel=4)
    return list(clipped)


def check_points(points, labels, height: int, width: int, with_box: bool = False) -> tuple[list, list]:
    """[(x, y), ...] inside the frame and labels (1 = object, 0 = background; default all 1).
    Without a box at least one point must be positive: negative points alone say only what the
    object is not; with a box they may all be negative (SAM's "this box, but not that")."""
    arr = _numbers(points, "points")
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise PromptError(f"points must be a non-empty list of (x, y), got shape {arr.shape}")
    if np.any(arr < 0) or np.any(arr[:, 0] > width) or np.any(arr[:, 1] > height):
        raise PromptError(f"a point of {arr.tolist()} is outside the {width}x{height} frame")
    lab = np.ones(len(arr), np.int64) if labels is None else _numbers(labels, "labels").astype(np.int64)
    if lab.shape != (len(arr),) or not np.isin(lab, (0, 1)).all():
        raise PromptError(f"labels must be one 0/1 value per point ({len(arr)}), got {labels!r}")
    if not with_box and not (lab == 1).any():
        raise PromptError("points without a box need at least one positive point (label 1)")
    return arr.tolist(), lab.tolist()


def check_mask(mask, height: int, width: int, allow_empty: bool = True) -> np.ndarray:
    """A (height, width) mask of bools or numbers (non-zero = object) -> read-only bool array."""
    try:
        arr = np.asarray(mask)
    except Exception:
        raise PromptError(f"mask must be an (H, W) array, got {type(mask).__name__}") from None
    if arr.shape != (height, width):
        raise PromptError(f"mask has shape {arr.shape}, expected the frame shape ({height}, {width})")
    if arr.dtype != bool:
        if arr.dtype.kind not in "uif":
            raise PromptError(f"mask must hold bools or numbers, got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise PromptError("mask holds NaN or infinite values; expected 0/1 (or bools)")
        arr = arr != 0
    arr = np.array(arr, dtype=bool)  # own copy: the user's array may change later
    if not allow_empty and not arr.any():
        raise PromptError("mask is empty: an object needs at least one pixel to start from")
    arr.flags.writeable = False
    return arr


def check_add_arguments(text, frame, box, points, labels, mask, num_frames: int, height: int, width: int):
    """The checks of ``VideoSession.add_object``'s arguments, before anything changes.

    -> (stripped text or None, frame index or None, prompt dict {frame, box, points, labels} or
    None, first mask or None).
    """
    has_prompt = box is not None or points is not None
    if frame is None and (has_prompt or mask is not None):
        raise PromptError("box=, points= and mask= need frame= (the frame they are drawn on)")
    if text is None and frame is None:
        raise PromptError("add_object needs text='...' or frame= with box=, points= or mask=")
    if frame is not None:
        frame = check_frame(frame, num_frames)
    if labels is not None and points is None:
        raise PromptError("labels= go with points=")
    if text is not None and has_prompt:
        raise PromptError("give either text or a box/points prompt (a text object may take a first mask=)")
    if mask is not None and has_prompt:
        raise PromptError("give either mask= or box=/points= (set_mask adds masks to an existing object)")
    if frame is not None and not has_prompt and mask is None:
        raise PromptError("frame= needs box=, points= or mask=")
    prompt = None
    if has_prompt:
        prompt = {"frame": frame, "box": None if box is None else check_box(box, height, width)}
        prompt["points"], prompt["labels"] = (check_points(points, labels, height, width, box is not None)
                                              if points is not None else (None, None))
    first_mask = None if mask is None else check_mask(mask, height, width, allow_empty=False)
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            problem = "is empty" if isinstance(text, str) else f"must be a string, not {type(text).__name__}"
            raise TextInputError(f"the expression {problem}; expected a phrase such as 'the red circle', "
                                 f"got {text!r}")
        text = text.strip()
    return text, frame, prompt, first_mask


# ------------------------------------------------------------------------------ helpers
def mask_box(mask: np.ndarray) -> list[float] | None:
    """Tight box (x0, y0, x1, y1) of a bool mask, x1/y1 the last column/row (SAM's convention)."""
    rows = np.flatnonzero(mask.any(1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])]


def stack_text(prompts: list) -> object:
    """Batch-1 TextPrompts with N_i words -> one TextPrompt (B, max N, C), padding masked out."""
    from ..modeling.refsam import TextPrompt

    n = max(p.words.shape[1] for p in prompts)
    words, masks = [], []
    for p in prompts:
        pad = n - p.words.shape[1]
        words.append(torch.nn.functional.pad(p.words, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(p.mask, (0, pad), value=False))
    return TextPrompt(torch.cat(words), torch.cat(masks), torch.cat([p.sentence for p in prompts]))
