"""Training clips generated on the fly from the synthetic generator (no dataset on disk).

``refsam train --data synthetic`` uses this: every index is a fresh procedural clip, so a run
never sees the same clip twice and needs nothing but a seed to reproduce. Items have the same
keys as ``loader.RefClipDataset`` (and its ``collate``) so the training loop does not care where clips come from.
"""
from __future__ import annotations

import numpy as np
import torch

from .loader import sample_frame_indices
from .synthetic import generate_clip

# Seeds of on-the-fly training clips live far above those write_synthetic_dataset uses
# (seed * 1e6 + i), so a written valid/train split never coincides with a streamed clip.
_STREAM_OFFSET = 7_000_000_000


class SyntheticClipDataset:
    """``length`` procedural clips; item i is clip ``generate_clip(offset + seed * 1e7 + i)``.

    Each item: frames uint8 (T, H, W, 3), masks bool (T, H, W) of one object, text (one of its
    expressions), video, obj_id, frame_indices. The object, expression and frames are drawn
    from (seed, epoch, i), so ``set_epoch`` gives new views of the same clips.
    objects_per_clip G > 1: G distinct objects of the clip (all when it has fewer), one
    expression each; masks (G', T, H, W) and text, obj_id, exp_id lists, as in RefClipDataset.
    """

    def __init__(self, length: int = 1_000_000, num_frames: int = 3, clip_frames: int = 8,
                 size: int = 128, seed: int = 0, objects_per_clip: int = 1) -> None:
        if objects_per_clip < 1:
            raise ValueError(f"objects_per_clip must be >= 1, got {objects_per_clip}")
        self.length, self.num_frames, self.clip_frames = int(length), int(num_frames), int(clip_frames)
        self.objects_per_clip = int(objects_per_clip)
        self.size, self.seed, self.epoch = int(size), int(seed), 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        clip_seed = _STREAM_OFFSET + self.seed * 10_000_000 + int(index)
        clip = generate_clip(clip_seed, num_frames=self.clip_frames, size=(self.size, self.size))
        rng = np.random.default_rng([clip_seed, self.epoch, 1])
        if self.objects_per_clip == 1:
            obj_id = int(rng.choice(sorted(clip.objects)))
            texts = clip.objects[obj_id]["expressions"]
            frames = sample_frame_indices(rng, self.clip_frames, self.num_frames)
            exp = int(rng.integers(len(texts)))
            return {
                "frames": torch.from_numpy(clip.frames[frames]),
                "masks": torch.from_numpy(clip.labels[frames] == obj_id),
                "text": texts[exp], "video": clip.name, "obj_id": obj_id, "exp_id": str(exp),
                "frame_indices": frames, "flipped": False,
            }
        ids = sorted(clip.objects)
        chosen = [int(o) for o in rng.choice(ids, size=min(self.objects_per_clip, len(ids)), replace=False)]
        frames = sample_frame_indices(rng, self.clip_frames, self.num_frames)
        exps = [int(rng.integers(len(clip.objects[o]["expressions"]))) for o in chosen]
        labels = clip.labels[frames]
        return {
            "frames": torch.from_numpy(clip.frames[frames]),
            "masks": torch.from_numpy(np.stack([labels == o for o in chosen])),
            "text": [clip.objects[o]["expressions"][e] for o, e in zip(chosen, exps)],
            "video": clip.name, "obj_id": chosen, "exp_id": [str(e) for e in exps],
            "frame_indices": frames, "flipped": False,
        }
