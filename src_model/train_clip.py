"""One training forward pass over a batch of clips, and what it needs (text cache, mask prompts).

Prompt dropout (REFSAM_SPEC "Extension for correction"): a frame t > 0 gets, with probability
``prompt_dropout``, the previous frame's ground-truth mask, perturbed like a real prediction, as a
mask prompt - what propagation after a user correction feeds the decoder; frame 0 gets, with
probability ``keyframe_prob``, its own exact mask without a track token - the keyframe
re-initialisation of τ. The rest is text only, as in the paper.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import mask_losses
from .modeling.refsam import FrameFeatures, TextPrompt


class TextCache:
    """Frozen text-encoder features per expression string, kept on the CPU (B, N, D) unpadded."""

    def __init__(self, encoder, limit: int = 200_000) -> None:
        self.encoder, self.limit, self.store = encoder, limit, {}

    def __call__(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> words (B, N, D), mask (B, N) bool on ``device``, padded to the longest expression."""
        missing = sorted({t for t in texts if t not in self.store})
        if missing:
            feats = self.encoder(missing)
            if len(self.store) + len(missing) > self.limit:
                self.store.clear()
            for i, text in enumerate(missing):
                self.store[text] = feats.words[i, feats.mask[i]].cpu()
        rows = [self.store[t] for t in texts]
        length = max(r.shape[0] for r in rows)
        words = torch.zeros(len(rows), length, rows[0].shape[1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            words[i, : len(r)], mask[i, : len(r)] = r, True
        return words.to(device), mask.to(device)


def perturb_masks(masks: torch.Tensor, generator: torch.Generator, strength: int = 3) -> torch.Tensor:
    """Imperfect copies of binary masks (B, H, W), like a previous frame's prediction would be.

    Per mask: a circular shift of up to ``strength`` pixels, then erosion or dilation by
    0-``strength`` pixels; one in ten is dropped (empty: the object was lost). The draws come from
    ``generator`` (CPU) and the work runs on the masks' device as a few batched ops: a per-row loop
    of small ops cost ~1.3 ms a row, which left a GPU idle at ~40 clips/s.
    """
    b, height, width = masks.shape
    shift = torch.randint(-strength, strength + 1, (b, 2), generator=generator)
    radius = torch.randint(0, strength + 1, (b,), generator=generator)
    dilate = torch.rand(b, generator=generator) < 0.5
    drop = torch.rand(b, generator=generator) < 0.1
    device = masks.device
    shift, radius, dilate, drop = (x.to(device) for x in (shift, radius, dilate, drop))
    # torch.roll per row as one gather: out[y, x] = in[(y - dy) % H, (x - dx) % W]
    rows_y = (torch.arange(height, device=device)[None] - shift[:, :1]) % height
    rows_x = (torch.arange(width, device=device)[None] - shift[:, 1:]) % width
    m = masks.float()[torch.arange(b, device=device)[:, None, None], rows_y[:, :, None], rows_x[:, None, :]]
    out = m.clone()
    for r in range(1, strength + 1):
        for grow in (True, False):
            rows = ((radius == r) & (dilate == grow)).nonzero()[:, 0]
            if rows.numel():
                # a (2r+1)^2 max filter as two 1-D passes (max_pool2d pads with -inf: same result)
                x = m[rows, None] if grow else -m[rows, None]
                x = F.max_pool2d(F.max_pool2d(x, (1, 2 * r + 1), 1, (0, r)), (2 * r + 1, 1), 1, (r, 0))[:, 0]
                out[rows] = x if grow else -x
    out = out.masked_fill(drop[:, None, None], 0.0)
    return out > 0.5


def decode_rows(model, features: FrameFeatures, text: TextPrompt, track, prompts, use: torch.Tensor):
    """Decode B rows where only rows with ``use`` get a mask prompt -> (low-res logits, track).

    The prompt encoder takes one mask tensor for the whole batch, so prompted and unprompted
    rows are decoded as two sub-batches and put back in order.
    """
    if bool(use.all()) or not bool(use.any()):
        out = model.decode(features, text, track, mask_prompt=prompts if bool(use.all()) else None)
        return out.low_res_logits, out.track
    parts = []
    for rows, prompt in ((use.nonzero()[:, 0], True), ((~use).nonzero()[:, 0], False)):
        out = model.decode(features.select(rows), text.select(rows), None if track is None else track[rows],
                           mask_prompt=prompts[rows] if prompt else None)
        parts.append((rows, out))
    order = torch.cat([rows for rows, _ in parts]).argsort()
    logits = torch.cat([o.low_res_logits for _, o in parts])[order]
    return logits, torch.cat([o.track for _, o in parts])[order]


def clip_forward(model, frames: torch.Tensor, masks: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor,
                 prompt_dropout: float, keyframe_prob: float, generator: torch.Generator,
                 clip_of_row: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """Loss of R rows (object + expression) of B clips, decoded online with the track token
    carried (not detached) over the frames. Each clip is encoded once, whatever its rows.

    frames uint8 (B, T, H, W, 3), masks bool (R, T, H, W), words (R, N, D) / word_mask (R, N)
    from the text encoder, clip_of_row (R,) the clip of each row (default: row i is clip i)
    -> (losses of ``mask_losses``, frame logits (R, T, H, W)).
    """
    b, t, h, w = masks.shape
    clips = frames.shape[0]
    images, input_size, original_size = model.preprocess(frames.reshape(clips * t, h, w, 3))
    embedding, hier = model.encode_images(images)
    embedding = embedding.view(clips, t, *embedding.shape[1:])
    hier = hier.view(clips, t, *hier.shape[1:])
    if clip_of_row is not None:
        rows = clip_of_row.to(embedding.device)
        embedding, hier = embedding[rows], hier[rows]
    text = model.project_text(words, word_mask)
    masks = masks.to(model.device)
    track, logits = None, []
    for i in range(t):
        feats = FrameFeatures(embedding[:, i], hier[:, i], input_size, original_size)
        draw = torch.rand(b, generator=generator)
        if i == 0:
            use, source = draw < keyframe_prob, masks[:, 0]
            prompt = source  # the keyframe: the user's mask is exact
        else:
            use, source = draw < prompt_dropout, masks[:, i - 1]
            prompt = perturb_masks(source, generator)
        prompts = model.mask_to_prompt(prompt, input_size) if bool(use.any()) else None
        low, track = decode_rows(model, feats, text, track, prompts, use.to(model.device))
        logits.append(model.postprocess(low, input_size, original_size))
    logits = torch.stack(logits, 1)
    losses = mask_losses(logits.flatten(0, 1), masks.flatten(0, 1))
    return losses, logits
