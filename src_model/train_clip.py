"""One training forward pass over a batch of clips, and what it needs (text cache, mask prompts).

Prompt dropout (REFSAM_SPEC "Extension for correction"): a frame t > 0 gets, with probability
``prompt_dropout``, the previous frame's ground-truth mask, perturbed like a real prediction, as a
mask prompt - what propagation after a user correction feeds the decoder; frame 0 gets, with
probability ``keyframe_prob``, its own exact mask without a track token - the keyframe
re-initialisation of τ. The rest is text only, as in the paper.

Prompt rows (``box_prob``): a row is, with that probability, a SAM-prompt object instead - what
"Add from prompts" makes: frame 0 is decoded from a jittered box of its mask and/or clicks (1-3
inside it, sometimes a negative one next to it), without text or τ (the engine's *anchor*); a
later frame is an anchor again with probability ``anchor_prob``, else decoded from the previous
frame's mask, perturbed, as mask prompt, that mask's box and τ (the engine's *step* for prompt
objects). Without prompt rows the prompt encoder's box and point embeddings are never trained.

Refinement (``refine_prob``): an anchor gets, with that probability, a mask to correct as a mask
prompt besides its box / clicks, as SAM refines its previous mask: a near miss (the true mask
shifted and grown or shrunk), another object's mask (the words found the wrong one), or nothing.
The box / clicks say what is right. Tried for the bundled model (stage 7, its README); the engine
does not send such a mask, as the prompt alone measured better.
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


def in_row_order(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sub-batches (row indices, rows) decoded apart -> one tensor in the batch's row order."""
    order = torch.cat([rows for rows, _ in parts]).argsort()
    return torch.cat([values for _, values in parts])[order]


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
    return (in_row_order([(rows, o.low_res_logits) for rows, o in parts]),
            in_row_order([(rows, o.track) for rows, o in parts]))


def mask_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of bool masks (B, H, W) -> xyxy (B, 4) float, x1/y1 the last column/row as
    ``objects.mask_box``, and (B,) bool: the mask has any pixel (else its box is meaningless)."""
    rows, cols = masks.any(2), masks.any(1)
    first = lambda hits: hits.float().argmax(1)  # noqa: E731 - the first True of each row
    last = lambda hits: hits.shape[1] - 1 - hits.flip(1).float().argmax(1)  # noqa: E731
    boxes = torch.stack([first(cols), first(rows), last(cols), last(rows)], 1).float()
    return boxes, rows.any(1)


def jitter_boxes(boxes: torch.Tensor, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Boxes as a user draws them: each side moved by noise of 10% of the box's side (SAM's
    training recipe), at most 20 px, kept inside the image."""
    side = (boxes[:, 2:] - boxes[:, :2] + 1).repeat(1, 2)
    noise = torch.randn(boxes.shape, generator=generator).to(boxes.device) * 0.1 * side
    out = boxes + noise.clamp(-20, 20)
    high = torch.tensor([size[1] - 1, size[0] - 1] * 2, dtype=out.dtype, device=out.device)
    return torch.minimum(out.clamp(min=0), high)


def inside_clicks(masks: torch.Tensor, generator: torch.Generator, count: int = 1) -> torch.Tensor:
    """``count`` clicks (x, y) per mask (B, H, W), drawn uniformly from its pixels -> (B, count, 2) float."""
    b, height, width = masks.shape
    weights = masks.flatten(1).float().cpu() + 1e-12  # an empty mask: anywhere (its rows are not used)
    index = torch.multinomial(weights, count, replacement=True, generator=generator)
    return torch.stack([index % width, index // width], 2).float().to(masks.device)


def outside_clicks(masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative click per mask (B, H, W) where a user puts one: off the object, near it (within
    its box grown by half its side, at least 8 px) -> (B, 1, 2) float, and labels (B, 1): 0, or -1
    (SAM's "not a point") where no pixel qualifies (the object fills its surroundings)."""
    b, height, width = masks.shape
    boxes, _ = mask_boxes(masks)
    margin = ((boxes[:, 2:] - boxes[:, :2] + 1) * 0.5).clamp(min=8).repeat(1, 2) * torch.tensor([-1, -1, 1, 1])
    x0, y0, x1, y1 = (boxes + margin.to(boxes.device)).unbind(1)
    xs = torch.arange(width, device=masks.device).view(1, 1, width)
    ys = torch.arange(height, device=masks.device).view(1, height, 1)
    inside = lambda v, low, high: (v >= low.view(-1, 1, 1)) & (v <= high.view(-1, 1, 1))  # noqa: E731
    near = inside(xs, x0, x1) & inside(ys, y0, y1)
    candidates = (near & ~masks).flatten(1).float().cpu()
    index = torch.multinomial(candidates + 1e-12, 1, generator=generator)[:, 0]
    labels = torch.where(candidates.sum(1) > 0, 0, -1).view(b, 1).to(masks.device)
    return torch.stack([index % width, index // width], 1).float().view(b, 1, 2).to(masks.device), labels


def masks_to_correct(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What a correction starts from, for true masks (B, H, W) bool (one draw for the batch): a
    near miss (``perturb_masks`` at strength 6), another row's mask (the wrong object; nothing when
    B is 1), or nothing."""
    kind = int(torch.randint(0, 3, (1,), generator=generator))
    if kind == 0:
        return perturb_masks(masks, generator, strength=6)
    if kind == 1 and masks.shape[0] > 1:
        return masks.roll(1, 0)
    return torch.zeros_like(masks)


def anchor_decode(model, feats: FrameFeatures, masks: torch.Tensor, generator: torch.Generator,
                  refine_prob: float = 0.0):
    """The engine's *anchor* for B objects with masks (B, H, W) on this frame: a jittered box, a box
    and clicks, or clicks (one draw for the batch), no text, no τ and, unless refining (module
    docstring; probability ``refine_prob``), no mask prompt. Clicks are 1-3 positive ones on the
    object and, half the time, a negative one next to it - what a user adds to keep a neighbour or
    the background out."""
    b, h, w = masks.shape
    mode = int(torch.randint(0, 3, (1,), generator=generator))  # box / box + clicks / clicks
    boxes = None
    if mode < 2:
        boxes = model.transform_coords(jitter_boxes(mask_boxes(masks)[0], (h, w), generator), feats.original_size)
    points = None
    if mode > 0:
        count = int(torch.randint(1, 4, (1,), generator=generator))
        coords = inside_clicks(masks, generator, count)
        labels = torch.ones(b, count, dtype=torch.int64, device=masks.device)
        if bool(torch.rand(1, generator=generator) < 0.5):
            negative, negative_labels = outside_clicks(masks, generator)
            coords, labels = torch.cat([coords, negative], 1), torch.cat([labels, negative_labels], 1)
        points = (model.transform_coords(coords, feats.original_size), labels)
    mask_prompt = None
    if refine_prob > 0 and bool(torch.rand(1, generator=generator) < refine_prob):  # no draw at 0: old runs' stream
        mask_prompt = model.mask_to_prompt(masks_to_correct(masks, generator), feats.input_size)
    return model.decode(feats, boxes=boxes, points=points, mask_prompt=mask_prompt)


def prompt_rows_forward(model, embedding, hier, input_size, original_size, masks, generator,
                        anchor_prob: float = 0.5, refine_prob: float = 0.0) -> torch.Tensor:
    """Frame logits (B, T, H, W) of B prompt objects decoded as the engine does (module docstring).

    embedding/hier (B, T, ...) per row; masks bool (B, T, H, W), every row visible on frame 0.
    Frame 0 is an anchor; a later frame is one again with probability ``anchor_prob`` where the
    object shows (the user prompting another frame), which trains the one-shot box / click decode
    three times as often as anchoring frame 0 alone.
    """
    b, t = masks.shape[:2]
    device = masks.device
    track, logits = None, []
    for i in range(t):
        feats = FrameFeatures(embedding[:, i], hier[:, i], input_size, original_size)
        anchor = torch.ones(b, dtype=torch.bool)
        if i > 0:
            anchor = (torch.rand(b, generator=generator) < anchor_prob) & masks[:, i].flatten(1).any(1).cpu()
        parts = []
        if bool(anchor.any()):
            rows = anchor.nonzero()[:, 0].to(device)
            parts.append((rows, anchor_decode(model, feats.select(rows), masks[rows, i], generator, refine_prob)))
        if not bool(anchor.all()):
            previous = perturb_masks(masks[:, i - 1], generator)
            boxes, has = mask_boxes(previous)
            prompt = model.mask_to_prompt(previous, input_size)
            for with_box in (True, False):  # a lost object (empty mask) follows τ alone, as in the engine
                rows = (~anchor.to(device) & (has == with_box)).nonzero()[:, 0]
                if rows.numel():
                    box = model.transform_coords(boxes[rows], original_size) if with_box else None
                    parts.append((rows, model.decode(feats.select(rows), track=track[rows], mask_prompt=prompt[rows],
                                                     boxes=box)))
        low = in_row_order([(rows, out.low_res_logits) for rows, out in parts])
        track = in_row_order([(rows, out.track) for rows, out in parts])
        logits.append(model.postprocess(low, input_size, original_size))
    return torch.stack(logits, 1)


def clip_forward(model, frames: torch.Tensor, masks: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor,
                 prompt_dropout: float, keyframe_prob: float, generator: torch.Generator,
                 clip_of_row: torch.Tensor | None = None, box_prob: float = 0.0,
                 refine_prob: float = 0.0) -> tuple[dict, torch.Tensor]:
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
    prompted = torch.zeros(b, dtype=torch.bool)
    if box_prob > 0:  # drawn only then: runs without prompt rows keep their random stream
        prompted = (torch.rand(b, generator=generator) < box_prob) & masks[:, 0].flatten(1).any(1).cpu()
    if not bool(prompted.any()):
        logits = text_rows_forward(model, embedding, hier, input_size, original_size, text, masks,
                                   prompt_dropout, keyframe_prob, generator)
    else:
        parts = []
        for rows, as_prompt in (((~prompted).nonzero()[:, 0], False), (prompted.nonzero()[:, 0], True)):
            if not rows.numel():
                continue
            index = rows.to(embedding.device)
            if as_prompt:
                part = prompt_rows_forward(model, embedding[index], hier[index], input_size, original_size,
                                           masks[index], generator, refine_prob=refine_prob)
            else:
                part = text_rows_forward(model, embedding[index], hier[index], input_size, original_size,
                                         text.select(index), masks[index], prompt_dropout, keyframe_prob, generator)
            parts.append((index, part))
        logits = in_row_order(parts)
    losses = mask_losses(logits.flatten(0, 1), masks.flatten(0, 1))
    return losses, logits


def text_rows_forward(model, embedding, hier, input_size, original_size, text, masks, prompt_dropout: float,
                      keyframe_prob: float, generator) -> torch.Tensor:
    """Frame logits (B, T, H, W) of B text objects decoded online, τ carried over the frames."""
    b, t = masks.shape[:2]
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
    return torch.stack(logits, 1)
