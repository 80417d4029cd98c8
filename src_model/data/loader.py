"""Training clips from a Ref-YouTube-VOS-style dataset, sampled and augmented as in RefSAM.

One item per (video, expression). Frames: an anchor f plus one frame from f-3..f-1 and one from
f+1..f+3, clamped to the video and sorted in time (REFSAM_SPEC.md, "Training"). Augmentation:
colour jitter per frame; a horizontal flip of the whole clip with "left" and "right" swapped in
the expression; a random resized crop shared by all frames that keeps the target object inside.

Every random choice comes from ``np.random.default_rng((seed, epoch, index))``, so an item
depends only on those three numbers, not on worker processes or the order items are read in.
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from src_model.data.ytvos import RefVideo, read_dataset

_SIDE = re.compile(r"\b(left|right)(most|wards?|-hand)?\b", re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """'left' <-> 'right' as whole words (also leftmost, leftward(s)), keeping each word's case."""
    def swap(m: re.Match) -> str:
        word = m.group(1)
        new = "right" if word.lower() == "left" else "left"
        if word.isupper():
            new = new.upper()
        elif word[0].isupper():
            new = new.capitalize()
        return new + (m.group(2) or "")
    return _SIDE.sub(swap, text)


def sample_frame_indices(rng: np.random.Generator, length: int, num_frames: int = 3) -> list[int]:
    """Sorted frame indices for one clip of a video with ``length`` frames.

    num_frames == 3: the paper's anchor f with one frame from f-3..f-1 and one from f+1..f+3
    (clamped, so a short video repeats frames). Otherwise num_frames sorted frames from a random
    window of 3 * (num_frames - 1) + 1 frames, the same reach per step as the 3-frame case.
    """
    if length < 1 or num_frames < 1:
        raise ValueError(f"need a video with frames and num_frames >= 1, got {length}, {num_frames}")
    if num_frames == 3:
        f = int(rng.integers(length))
        before = max(f - int(rng.integers(1, 4)), 0)
        after = min(f + int(rng.integers(1, 4)), length - 1)
        return [before, f, after]
    window = min(length, 3 * (num_frames - 1) + 1)
    start = int(rng.integers(length - window + 1))
    picks = rng.choice(window, size=num_frames, replace=window < num_frames)
    return sorted(int(start + i) for i in picks)


def colour_jitter(frame: np.ndarray, rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    """Small brightness, contrast and saturation changes of one (H, W, 3) uint8 frame.

    Kept small because expressions name colours: a red object must stay red.
    """
    img = frame.astype(np.float32)
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    img = img * b
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = (img - grey.mean()) * c + grey.mean()
    grey = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    img = grey + (img - grey) * s
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _crop_box(rng: np.random.Generator, masks: np.ndarray, min_scale: float) -> tuple[int, int, int, int]:
    """(y0, x0, h, w): a crop of the frame's aspect ratio, scale in [min_scale, 1], containing the
    target's bounding box over the whole clip (the crop grows to fit it when needed)."""
    _, height, width = masks.shape
    scale = rng.uniform(min_scale, 1.0)
    ys, xs = np.nonzero(masks.any(0))
    if len(ys):
        scale = max(scale, (ys.max() + 1 - ys.min()) / height, (xs.max() + 1 - xs.min()) / width)
    ch, cw = min(height, round(scale * height)), min(width, round(scale * width))
    # Range of crop corners that keep the box inside; the whole frame when the target is absent.
    lo_y, hi_y = (max(0, ys.max() + 1 - ch), min(ys.min(), height - ch)) if len(ys) else (0, height - ch)
    lo_x, hi_x = (max(0, xs.max() + 1 - cw), min(xs.min(), width - cw)) if len(xs) else (0, width - cw)
    y0 = int(rng.integers(lo_y, hi_y + 1))
    x0 = int(rng.integers(lo_x, hi_x + 1))
    return y0, x0, ch, cw


def resize_clip(frames: torch.Tensor, masks: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """frames (T, H, W, 3) uint8 -> (T, h, w, 3) uint8 (bilinear, antialiased);
    masks (T, H, W) bool -> (T, h, w) bool (nearest)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames, masks
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    frames = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    m = F.interpolate(masks[:, None].float(), size=size, mode="nearest-exact")
    return frames, m[:, 0] > 0.5


class RefClipDataset(Dataset):
    """Training items, one per (video, expression) of a Ref-YouTube-VOS-style dataset.

    objects_per_clip G > 1 adds up to G - 1 other objects of the same video (one expression
    each) to every item, so the model is trained to tell the objects of one clip apart by their
    words, and the image encoder runs once for all of them. Then masks is (G', T, H, W) and
    text, obj_id, exp_id are lists, the item's own expression first.

    item: {"frames": uint8 (T, H, W, 3), "masks": bool (T, H, W), "text": str, "video": str,
    "obj_id": int, "exp_id": str, "frame_indices": [int], "flipped": bool}.
    size: output (H, W) (an int means square); None keeps each video's own size.
    """

    def __init__(self, root, split: str | None = None, num_frames: int = 3, size=None,
                 augment: bool = True, seed: int = 0, min_crop: float = 0.7, flip_prob: float = 0.5,
                 objects_per_clip: int = 1):
        self.videos: dict[str, RefVideo] = read_dataset(root, split)
        self.num_frames = int(num_frames)
        self.size = None if size is None else ((int(size), int(size)) if np.isscalar(size) else tuple(map(int, size)))
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.min_crop, self.flip_prob = float(min_crop), float(flip_prob)
        if objects_per_clip < 1:
            raise ValueError(f"objects_per_clip must be >= 1, got {objects_per_clip}")
        self.objects_per_clip = int(objects_per_clip)
        # Expressions without an object id (valid/test splits), or in videos without a single
        # annotation PNG, cannot be trained on: their masks would all be empty.
        self.unannotated = sorted(name for name, video in self.videos.items()
                                  if not any(path is not None for path in video.annotation_paths))
        skip = set(self.unannotated)
        self.items = [(name, exp_id, text, obj) for name, video in self.videos.items()
                      if name not in skip
                      for exp_id, text, obj in video.expressions if obj is not None]

    def set_epoch(self, epoch: int) -> None:
        """New random choices each epoch, the same ones for the same epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _partners(self, video: RefVideo, obj: int, rng: np.random.Generator) -> list[tuple[str, str, int]]:
        """Up to objects_per_clip - 1 other objects of the same video, one random expression each."""
        others = [o for o in video.object_ids if o != obj]
        count = min(self.objects_per_clip - 1, len(others))
        if count == 0:
            return []
        rows = []
        for other in rng.choice(others, size=count, replace=False):
            choices = [(e, t, o) for e, t, o in video.expressions if o == int(other)]
            rows.append(choices[int(rng.integers(len(choices)))])
        return rows

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} items")
        name, exp_id, text, obj = self.items[index]
        video = self.videos[name]
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        indices = sample_frame_indices(rng, len(video), self.num_frames)
        rows = [(exp_id, text, obj)] + self._partners(video, obj, rng)
        frames = video.load_frames(indices)
        labels = video.load_labels(indices)
        masks = np.stack([labels == o for _, _, o in rows])  # (G, T, H, W)
        texts = [t for _, t, _ in rows]
        flipped, out_size = False, self.size
        if self.augment:
            out_size = self.size or frames.shape[1:3]  # crops are resized back to a fixed size
            frames = np.stack([colour_jitter(f, rng) for f in frames])
            if rng.random() < self.flip_prob:
                frames, masks, flipped = frames[:, :, ::-1], masks[..., ::-1], True
                texts = [swap_left_right(t) for t in texts]
            # The crop keeps every object of the item in view.
            y0, x0, ch, cw = _crop_box(rng, masks.reshape(-1, *masks.shape[2:]), self.min_crop)
            frames, masks = frames[:, y0:y0 + ch, x0:x0 + cw], masks[..., y0:y0 + ch, x0:x0 + cw]
        frames_t = torch.from_numpy(np.ascontiguousarray(frames))
        masks_t = torch.from_numpy(np.ascontiguousarray(masks))
        if out_size is not None:
            g = masks_t.shape[0]
            frames_t, flat = resize_clip(frames_t, masks_t.flatten(0, 1), out_size)
            masks_t = flat.view(g, -1, *flat.shape[1:])
        item = {"frames": frames_t, "video": name, "frame_indices": [int(i) for i in indices], "flipped": flipped}
        if self.objects_per_clip == 1:
            return {**item, "masks": masks_t[0], "text": texts[0], "obj_id": int(obj), "exp_id": exp_id}
        return {**item, "masks": masks_t, "text": texts, "obj_id": [int(o) for _, _, o in rows],
                "exp_id": [e for e, _, _ in rows]}


def collate(batch: list[dict]) -> dict:
    """Stack items of equal clip size into clips and rows (one row per object and expression).

    frames (B, T, H, W, 3) uint8; masks (R, T, H, W) bool; clip (R,) long, the clip of each row;
    obj_id (R,) long; text, exp_id (R,) lists; video, frame_indices, flipped (B,) lists. An item
    holds one object (masks (T, H, W), text str) or several (masks (G, T, H, W), text list).
    """
    shapes = {tuple(item["frames"].shape) for item in batch}
    if len(shapes) != 1:
        raise ValueError(f"clips differ in shape {sorted(shapes)}; give RefClipDataset a fixed size= "
                         "(refsam train: --size N)")

    def rows(item, key):
        return [item[key]] if item["masks"].dim() == 3 else list(item[key])

    masks = [item["masks"] if item["masks"].dim() == 4 else item["masks"][None] for item in batch]
    return {
        "frames": torch.stack([item["frames"] for item in batch]),
        "masks": torch.cat(masks),
        "clip": torch.cat([torch.full((len(m),), i, dtype=torch.long) for i, m in enumerate(masks)]),
        "obj_id": torch.tensor([o for item in batch for o in rows(item, "obj_id")], dtype=torch.long),
        "text": [t for item in batch for t in rows(item, "text")],
        "exp_id": [e for item in batch for e in rows(item, "exp_id")],
        **{key: [item[key] for item in batch] for key in ("video", "frame_indices", "flipped")},
    }
