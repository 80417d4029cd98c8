"""J&F evaluation of a RefSAM model on a referring-video dataset (``refsam eval``).

Protocol. Every expression is scored on its own, as Ref-YouTube-VOS does: one session per
video (the image encoder runs once per frame, every expression reuses the cached features),
and in it one text object per expression, added, propagated over the whole video, scored
against the ground truth of its object, then removed before the next expression - so
expressions never compete for pixels. J and F are the DAVIS-2017 per-frame measures
(``metrics.evaluate_video``); J&F is averaged per expression (Ref-YouTube-VOS) and reported per
object too. ``davis=True`` applies the Ref-DAVIS17 protocol: per object within each of the four
expression sets, then the mean of the four sets (objects are matched by their annotated id,
which is what the unsupervised DAVIS matching finds for referring predictions).

Interactive rounds (``interactive=K``): start from the text-only result, then K times replace
the worst frame (lowest J, not yet corrected) with its ground-truth mask (``set_mask``) and
re-propagate from it; J, F, J&F are reported after every round. A video has no frame left to
correct after as many rounds as it has frames: its last scores count in later rounds, and the
dataset's rounds stop at the longest video's frame count.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError
from .metrics import evaluate_video, j_and_f


def _score(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Per-frame and mean J/F of one boolean mask volume (T, H, W) against another."""
    result = evaluate_video(pred.astype(np.uint8), gt.astype(np.uint8), obj_ids=[1])[1]
    return {"J": result["J"], "F": result["F"], "J&F": result["J&F"],
            "J_per_frame": result["J_per_frame"], "F_per_frame": result["F_per_frame"]}


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")


def _summary(rows: list[dict]) -> dict:
    j, f = _mean(rows, "J"), _mean(rows, "F")
    return {"J": j, "F": f, "J&F": j_and_f(j, f)}


def evaluate_expression(session, text: str, gt: np.ndarray | None, interactive: int = 0) -> dict:
    """Score one expression in ``session`` (its object is removed afterwards).

    gt: (T, H, W) bool ground truth of the referred object (None: predict only).
    Returns {"mask": (T, H, W) bool text-only prediction, "rounds": [scores after round 0..K]
    (fewer when the video has fewer than K frames to correct), "corrected": [frames given their GT
    mask, in order]}.
    """
    obj = session.add_object(text=text)
    try:
        for _ in session.propagate():
            pass
        mask = np.asarray(session.labels) == obj
        rounds, corrected = [], []
        if gt is not None:
            rounds.append(_score(mask, gt))
            current = mask
            for _ in range(int(interactive)):
                js = np.asarray(rounds[-1]["J_per_frame"], dtype=float)
                js[corrected] = np.inf  # a corrected frame is a locked keyframe
                if not np.isfinite(js).any():  # every frame corrected: no round left to run
                    break
                worst = int(np.argmin(js))
                corrected.append(worst)
                session.set_mask(obj, worst, gt[worst])
                for _ in session.propagate(start=worst):
                    pass
                current = np.asarray(session.labels) == obj
                rounds.append(_score(current, gt))
        return {"mask": mask, "rounds": rounds, "corrected": corrected}
    finally:
        session.remove_object(obj)


class SubmissionWriter:
    """Ref-YouTube-VOS submission: ``Annotations/<video>/<exp_id>/<frame>.png`` (0/255) in a zip."""

    def __init__(self, path) -> None:
        from .atomic import atomic_path

        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self.zip = zipfile.ZipFile(self._tmp, "w", zipfile.ZIP_DEFLATED)

    def add(self, video: str, exp_id: str, frame_names: list[str], masks: np.ndarray) -> None:
        from PIL import Image

        for name, mask in zip(frame_names, masks):
            buffer = io.BytesIO()
            Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buffer, format="PNG")
            self.zip.writestr(f"Annotations/{video}/{exp_id}/{name}.png", buffer.getvalue())

    def close(self, ok: bool = True) -> None:
        self.zip.close()
        if ok:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)


def evaluate_dataset(model, root, split: str | None = None, *, davis: bool = False, interactive: int = 0,
                     submission=None, max_videos: int | None = None, progress: bool = True) -> dict:
    """Evaluate ``model`` on a dataset folder; see the module docstring for the protocol.

    Returns {"J", "F", "J&F" (text only), "rounds": [{"round", "J", "F", "J&F"}] (0 = text only),
    "num_videos", "num_expressions", "per_expression": [...], "per_object": [...],
    "davis_sets": {set: {"J", "F", "J&F"}} (davis only)}.
    """
    from .data.ytvos import read_dataset, read_ref_davis
    from .video.session import VideoSession

    videos = read_ref_davis(root, split) if davis else read_dataset(root, split)
    if max_videos is not None and max_videos < 1:
        raise ValueError(f"max_videos (--max-videos) must be >= 1, got {max_videos}")
    names = list(videos)[: max_videos] if max_videos else list(videos)
    scorable = any(any(p is not None for p in videos[n].annotation_paths)
                   and any(obj is not None for _, _, obj in videos[n].expressions) for n in names)
    if not scorable and not submission:
        raise DatasetFormatError(
            f"{root}: nothing to score: no video has ground-truth masks (Annotations/<video>/*.png) for "
            "its expressions' object ids; pass --submission OUT.zip to write predictions for a server instead")
    writer = SubmissionWriter(submission) if submission else None
    per_expression: list[dict] = []
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="eval", unit="video", mininterval=2.0)
    ok = False
    try:
        for name in iterator:
            video = videos[name]
            frames = video.load_frames()
            labels = video.load_labels() if any(p is not None for p in video.annotation_paths) else None
            session = VideoSession(model, frames)
            try:
                for exp_id, text, obj_id in video.expressions:
                    gt = labels == obj_id if labels is not None and obj_id is not None else None
                    result = evaluate_expression(session, text, gt, interactive)
                    if writer is not None:
                        writer.add(name, exp_id, video.frame_names, result["mask"])
                    if result["rounds"]:
                        per_expression.append({
                            "video": name, "exp_id": exp_id, "text": text, "obj_id": obj_id,
                            "set": video.expression_sets.get(exp_id, ""), "corrected": result["corrected"],
                            **{k: result["rounds"][0][k] for k in ("J", "F", "J&F")},
                            "rounds": [{k: r[k] for k in ("J", "F", "J&F")} for r in result["rounds"]],
                        })
            finally:
                session.close()
        ok = True
    finally:
        if writer is not None:
            writer.close(ok)
    return summarize(per_expression, len(names), davis, interactive)


def summarize(per_expression: list[dict], num_videos: int, davis: bool, interactive: int) -> dict:
    """Dataset-level scores from the per-expression rows of ``evaluate_dataset``."""
    objects: dict[tuple, list[dict]] = {}
    for row in per_expression:
        objects.setdefault((row["video"], row["obj_id"]), []).append(row)
    per_object = [{"video": v, "obj_id": o, **_summary(rows)} for (v, o), rows in objects.items()]
    # An expression whose frames are all corrected keeps its last scores in later rounds; rounds after
    # every expression ran out (more than the longest video has frames) never happened: not reported.
    done = min(interactive, max((len(row["rounds"]) - 1 for row in per_expression), default=0))
    rounds = [{"round": r, **_summary([row["rounds"][min(r, len(row["rounds"]) - 1)] for row in per_expression])}
              for r in range(done + 1)] if per_expression else []
    out = {"num_videos": num_videos, "num_expressions": len(per_expression), **_summary(per_expression),
           "per_object_mean": _summary(per_object), "rounds": rounds,
           "per_expression": per_expression, "per_object": per_object}
    if davis:
        sets = {}
        for name in sorted({row["set"] for row in per_expression}):
            rows = [r for r in per_expression if r["set"] == name]
            by_obj: dict[tuple, list[dict]] = {}
            for r in rows:
                by_obj.setdefault((r["video"], r["obj_id"]), []).append(r)
            sets[name or "all"] = _summary([_summary(v) for v in by_obj.values()])
        out["davis_sets"] = sets
        out.update({k: _mean(list(sets.values()), k) for k in ("J", "F")})
        out["J&F"] = j_and_f(out["J"], out["F"])
    return out
