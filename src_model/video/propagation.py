"""Propagation engine: which object is decoded how on which frame, and one batched step per frame.

A run is a list of *passes* (forward or backward). In a pass each object follows a *chain*: a
contiguous run of frames in the pass direction, where each frame gets one action:

    key     frame t is a keyframe of the object: decode t with the keyframe mask as a mask prompt
            (plus the text for text objects) only to re-initialise τ; the locked mask stays.
    anchor  frame t holds the object's box/points prompt: SAM's prompt path, no τ, no mask prompt.
    cold    a text object starts without any state: text only (the paper's first frame).
    resume  continue from the state an earlier pass or run stored for the neighbouring frame.
    step    continue from the previous frame of this chain: its τ, and when the chain started from
            a mask (keyframe/anchor), the object's mask on that frame as a mask prompt (prompt
            objects also get its bounding box: SAM's plain-weights way to follow an object).

A chain re-initialised at a keyframe never looks at τ from before it, so frames past the next
keyframe do not depend on anything before it: that is why a correction at k only re-propagates
up to the neighbouring keyframes (DESIGN.md, "Propagation semantics").

The mask prompt is made from the object's *binary* mask on the previous frame (as committed to
the labels, after overlaps), through ``RefSAM.mask_to_prompt``, not from kept low-res logits:
it is what training feeds (REFSAM_SPEC, "Extension for correction"), and every chain state is
then the labels plus τ, so a run can stop, be saved, reloaded and resume bit-exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .objects import PROMPT, TEXT, VideoObject, mask_box, stack_text

KEY, ANCHOR, COLD, RESUME, STEP = "key", "anchor", "cold", "resume", "step"
DIRECTIONS = ("forward", "backward", "both")


@dataclass
class Pass:
    """One sweep of a run: ``frames`` in processing order, ``actions[t]`` = [(obj_id, action)]."""

    step: int
    frames: list[int]
    actions: dict[int, list[tuple[int, str]]]


def _action(obj: VideoObject, t: int, default: str) -> str:
    if t in obj.keyframes:
        return KEY
    if t == obj.anchor:
        return ANCHOR
    return default


def _sweep(obj: VideoObject, step: int, num_frames: int, from_boundary: bool) -> list[tuple[int, str]]:
    """Whole-video chain in direction ``step``, re-initialised at every boundary it meets.

    Prompt objects (and text objects when ``from_boundary``) start at their first boundary in the
    pass direction; text objects otherwise start cold at the first frame (online, as in the paper).
    """
    bounds = obj.boundaries
    if obj.kind == PROMPT or (from_boundary and bounds):
        if not bounds:
            return []
        first = bounds[0] if step > 0 else bounds[-1]
    else:
        first = 0 if step > 0 else num_frames - 1
    end = num_frames if step > 0 else -1
    return [(t, _action(obj, t, COLD if t == first else STEP)) for t in range(first, end, step)]


def _until_boundary(obj: VideoObject, start: int, step: int, num_frames: int) -> list[tuple[int, str]]:
    """Chain from ``start`` in direction ``step`` up to, not including, the next boundary."""
    bounds = set(obj.boundaries)
    out = []
    t = start
    while 0 <= t < num_frames and (t == start or t not in bounds):
        out.append((t, _action(obj, t, RESUME if t == start else STEP)))
        t += step
    return out


def plan(objects: dict[int, VideoObject], num_frames: int, start: int | None, direction: str) -> list[Pass]:
    """The passes of ``propagate(start, direction)`` for ``objects`` (id -> VideoObject).

    start=None: the whole video. "forward"/"backward" sweep it once in that direction; "both"
    covers every frame once: forward from each object's first boundary (text objects without one
    run online from frame 0), then backward from that boundary to frame 0.
    start=k: a re-propagation. "forward": k up to the next boundary of each object; "backward": k
    down to the previous one; "both": the forward pass, then k-1 down to the previous boundary.
    """
    chains: list[tuple[int, dict[int, list]]] = []
    if start is None and direction != "both":
        step = 1 if direction == "forward" else -1
        chains.append((step, {i: _sweep(o, step, num_frames, False) for i, o in objects.items()}))
    elif start is None:
        backward = {}
        for i, o in objects.items():
            bounds = o.boundaries
            if bounds and bounds[0] > 0:
                backward[i] = _until_boundary(o, bounds[0] - 1, -1, num_frames)
        chains += [(1, {i: _sweep(o, 1, num_frames, True) for i, o in objects.items()}), (-1, backward)]
    else:
        if direction in ("forward", "both"):
            chains.append((1, {i: _until_boundary(o, start, 1, num_frames) for i, o in objects.items()}))
        if direction == "backward":
            chains.append((-1, {i: _until_boundary(o, start, -1, num_frames) for i, o in objects.items()}))
        elif direction == "both" and start > 0:
            chains.append((-1, {i: _until_boundary(o, start - 1, -1, num_frames) for i, o in objects.items()
                                if start - 1 not in o.boundaries}))
    passes = []
    for step, per_object in chains:
        actions: dict[int, list] = {}
        for i, chain in per_object.items():
            for t, action in chain:
                actions.setdefault(t, []).append((i, action))
        if actions:
            passes.append(Pass(step, sorted(actions, reverse=step < 0), actions))
    return passes


# ------------------------------------------------------------------------------ one frame
@dataclass
class Job:
    """What one object's decode on one frame needs. mask: (H, W) bool; box: xyxy pixels."""

    obj: int
    kind: str
    cond: bool
    key: bool = False
    text: object = None
    phrase: str | None = None
    mask: np.ndarray | None = None
    box: list | None = None
    points: tuple[list, list] | None = None
    tau: np.ndarray | None = None
    lost: bool = False

    @property
    def group(self) -> tuple:
        return (self.kind, self.mask is not None, self.box is not None,
                0 if self.points is None else len(self.points[0]))


@dataclass
class FrameResult:
    """Per object: frame logits (H, W) on the model device for objects competing for pixels,
    and the new τ (C,) numpy for every decoded object."""

    logits: dict[int, torch.Tensor] = field(default_factory=dict)
    taus: dict[int, np.ndarray] = field(default_factory=dict)


def _conditioned(model, feats, text, group: list[Job], frame: int | None, cache) -> tuple | None:
    """The group's text-conditioned rows and first-layer projections (``RefSAM.first_layer_inputs``)
    from ``cache`` (ConditionedCache) when every row is there, else computed for the whole group
    and stored; None without a cache."""
    if cache is None or frame is None:
        return None
    keys = [(job.phrase, frame) for job in group]
    rows = [cache.get(key) for key in keys]
    if all(row is not None for row in rows):
        if any(len(row) == 1 for row in rows):  # the cache kept only the rows: project them again
            conditioned = rows[0][0].unsqueeze(0) if len(rows) == 1 else torch.stack([row[0] for row in rows])
            return (conditioned, *model.first_layer_inputs(conditioned))
        if len(rows) == 1:  # one row: views, no copy
            return tuple(part.unsqueeze(0) for part in rows[0])
        return tuple(torch.stack(parts) for parts in zip(*rows))
    conditioned = model.text_conditioned(feats, text, len(group))
    entry = (conditioned, *model.first_layer_inputs(conditioned))
    for r, key in enumerate(keys):
        # A row of a larger batch is copied out, so evicting it frees its own bytes.
        cache.put(key, tuple(part[r].clone() if len(group) > 1 else part[r] for part in entry))
    return entry


def decode_jobs(model, feats, jobs: list[Job], frame: int | None = None, cache=None) -> FrameResult:
    """Decode all jobs of one frame: one ``model.decode`` call per group of alike jobs.

    feats: FrameFeatures of the frame (batch 1, broadcast over the group). Rows of a group
    without τ are masked out of the track token with ``track_valid``. cache: a
    ConditionedCache for text objects' F̄ + HDA of ``frame`` and its first-layer projections
    (None: computed every time, through the plain decode).
    """
    result = FrameResult()
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if not job.lost:
            groups.setdefault(job.group, []).append(job)
    device = model.device
    size = feats.original_size
    for (kind, has_mask, has_box, n_points), group in groups.items():
        text = stack_text([j.text for j in group]) if kind == TEXT else None
        mask_prompt = boxes = points = track = valid = None
        if has_mask:
            masks = torch.from_numpy(np.stack([j.mask for j in group]))
            mask_prompt = model.mask_to_prompt(masks, feats.input_size)
        if has_box:
            boxes = model.transform_coords(torch.tensor([j.box for j in group], device=device), size)
        if n_points:
            coords = torch.tensor([j.points[0] for j in group], device=device, dtype=torch.float32)
            labels = torch.tensor([j.points[1] for j in group], device=device, dtype=torch.int64)
            points = (model.transform_coords(coords, size), labels)
        taus = [j.tau for j in group]
        if any(t is not None for t in taus):
            dim = next(t for t in taus if t is not None).shape[0]
            track = torch.from_numpy(np.stack([t if t is not None else np.zeros(dim, np.float32)
                                               for t in taus])).to(device)
            if not all(t is not None for t in taus):
                valid = torch.tensor([t is not None for t in taus], device=device)
        cached = _conditioned(model, feats, text, group, frame, cache) if kind == TEXT else None
        conditioned, first_layer = (None, None) if cached is None else (cached[0], cached[1:])
        out = model.decode(feats, text=text, track=track, mask_prompt=mask_prompt, boxes=boxes, points=points,
                           track_valid=valid, conditioned=conditioned, first_layer=first_layer)
        competing = [r for r, j in enumerate(group) if not j.key]
        if competing:
            frame_logits = model.postprocess(out.low_res_logits[competing], feats.input_size, size)
            for r, row in zip(competing, frame_logits):
                result.logits[group[r].obj] = row
        new_taus = out.track.float().cpu().numpy()
        for r, job in enumerate(group):
            result.taus[job.obj] = new_taus[r]
    return result


def anchor_job(obj_id: int, kind: str, prompt: dict) -> Job:
    """The anchor decode of a box/points ``prompt`` ({box, points, labels}): SAM's prompt path, no
    τ, no mask prompt."""
    points = None if prompt.get("points") is None else (prompt["points"], prompt["labels"])
    return Job(obj_id, kind, True, box=prompt.get("box"), points=points)


def decode_prompt(model, feats, prompt: dict, threshold: float) -> np.ndarray:
    """(H, W) bool mask of a checked box/points ``prompt`` on one frame: the anchor decode of a
    prompt object there, thresholded as ``resolve`` does."""
    with torch.inference_mode():
        result = decode_jobs(model, feats, [anchor_job(0, PROMPT, prompt)])
        return _above(result.logits[0], threshold)


def _above(logits: torch.Tensor, threshold: float) -> np.ndarray:
    """logits > threshold as a numpy bool array: compared on the device (1 byte per pixel comes
    back), or in numpy for CPU tensors (the same float comparison, without torch's overhead)."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return logits.numpy() > threshold
    return (logits > threshold).cpu().numpy()


def resolve(old: np.ndarray, cleared: list[int], logits: dict[int, torch.Tensor],
            locked: dict[int, np.ndarray], threshold: float) -> np.ndarray:
    """New label frame from the old one (see the overlap rules in session.py).

    old: (H, W) ids; cleared: ids re-decoded on this frame (their old pixels are dropped);
    logits: id -> (H, W) logits of the objects competing; locked: id -> keyframe mask on this frame.
    Decoded objects only take pixels that are then free: background, or their own.
    """
    new = old.copy()
    if len(cleared) > 8:
        new[np.isin(new, np.asarray(cleared, dtype=new.dtype))] = 0
    else:
        for obj in cleared:  # a few comparisons beat np.isin's sort on a whole frame
            new[new == obj] = 0
    # np.where rather than boolean-mask assignment: a speckled mask (an untrained model's) made
    # the scattered writes cost a twentieth of a whole re-propagation step.
    if len(logits) == 1:  # one object: its own threshold, no arg-max over a stack
        (obj, row), = logits.items()
        new = np.where(_above(row, threshold) & (new == 0), new.dtype.type(obj), new)
    elif logits:
        ids = list(logits)
        stacked = torch.stack([logits[i] for i in ids])
        best, arg = stacked.max(0)
        table = np.asarray(ids, dtype=new.dtype)
        new = np.where(_above(best, threshold) & (new == 0), table[arg.cpu().numpy()], new)
    for obj, mask in locked.items():  # a keyframe is the whole truth about its object on its frame
        new[(new == obj) & ~mask] = 0
        new[mask] = obj
    return new


def job_for(obj: VideoObject, action: str, t: int, state, prev_mask, use_track: bool) -> Job | None:
    """The Job of ``obj`` at frame ``t``, or None when nothing needs decoding.

    state: (τ or None, cond, previous frame) for STEP/RESUME; prev_mask: the object's (H, W) mask
    on that frame; use_track: False for prompt objects on plain SAM weights (τ means nothing there).
    """
    if action == KEY:
        if not use_track:
            return None  # τ is the only product of a keyframe decode, and it would go unused
        mask = obj.keyframes[t]
        box = mask_box(mask) if obj.kind == PROMPT else None
        return Job(obj.id, obj.kind, True, key=True, text=obj.text_prompt, phrase=obj.text, mask=mask, box=box)
    if action == ANCHOR:
        return anchor_job(obj.id, obj.kind, obj.prompt)
    if action == COLD:
        return Job(obj.id, obj.kind, False, text=obj.text_prompt, phrase=obj.text)
    tau, cond, _ = state
    tau = tau if use_track else None
    if obj.kind == TEXT:
        return Job(obj.id, TEXT, cond, text=obj.text_prompt, phrase=obj.text, mask=prev_mask if cond else None,
                   tau=tau)
    box = mask_box(prev_mask)
    # Without a box or τ there is nothing to follow: the object stays lost until a correction.
    return Job(obj.id, PROMPT, True, mask=prev_mask, box=box, tau=tau, lost=box is None and tau is None)


def resume_state(obj: VideoObject, prev: int, num_frames: int, mask_on) -> tuple | None:
    """Chain state (τ or None, cond, frame) an earlier run stored for frame ``prev``, or what can
    stand in for it; None when there is nothing to continue from. mask_on(obj_id, frame) -> mask."""
    if not 0 <= prev < num_frames:
        return None
    if obj.known[prev]:
        tau = obj.track[prev]
        return (None if np.isnan(tau[0]) else tau.copy(), bool(obj.cond[prev]), prev)
    if prev in obj.keyframes or (obj.kind == PROMPT and mask_on(obj.id, prev).any()):
        return (None, True, prev)  # the mask is there, τ is not: follow the mask
    return None


def frame_jobs(objects: dict, actions: list, t: int, step: int, running: dict, num_frames: int, mask_on,
               heads_trained: bool) -> list[tuple]:
    """What each object does on frame ``t`` of a pass (``actions``: the pass's (obj_id, action)
    list there; ``step`` its direction; ``running``: obj_id -> chain state of this pass):
    [(obj, action, Job or None, cond, use_track)]. A prompt object with nothing to follow is
    left out; a text object with nothing to resume from starts cold. mask_on(obj_id, frame) -> mask.
    """
    pending = []
    for obj_id, action in actions:
        obj = objects[obj_id]  # edits stop the run, so its objects still exist
        use_track = obj.kind == TEXT or heads_trained
        state = None
        if action in (STEP, RESUME):
            if action == STEP:
                state = running.get(obj_id)
            else:
                state = resume_state(obj, t - step, num_frames, mask_on)
            if state is None:
                if obj.kind != TEXT:
                    continue  # a prompt object with nothing to follow on this frame
                action = COLD
        prev = None
        if state is not None and (state[1] or obj.kind == PROMPT):
            prev = mask_on(obj_id, state[2])
        job = job_for(obj, action, t, state, prev, use_track)
        cond = True if action not in (COLD, STEP, RESUME) else (False if action == COLD else state[1])
        pending.append((obj, action, job, cond, use_track))
    return pending
