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
the worst frame (lowest J, not yet tried) with its ground-truth mask (``set_mask``) and
re-propagate from it; J, F, J&F are reported after every round. A video has no frame left to
correct after as many rounds as it has frames: its last scores count in later rounds, and the
dataset's rounds stop at the longest video's frame count. ``correct_with`` says what a round puts
on the worst frame: its ground-truth mask ("mask", a painted correction), or what the model
predicts there from the prompt a user would draw for it ("box", "click", ...: ``prompt_from_mask``
of the ground truth, through ``VideoSession.predict_mask``) - the widget's "Correct from prompts".
A frame where the object is absent is erased either way (no prompt says "nothing here"). A
prediction no better on its frame than what was there (J) is undone, as a user seeing it would:
the round is spent, the frame is left as it was and not picked again ("rejected", not "corrected").

Prompt objects (``prompt="box"`` / ``"click"`` / ``"clicks"`` / ``"click-neg"`` / ``"box-neg"``):
instead of expressions, every annotated object is started from its ground-truth box (or one
click, three clicks, a click and a negative click on a neighbour, a box and a negative click in
it: ``prompt_from_mask``) on the first frame it shows, with no words, and propagated both
ways - the SAM prompt path - then scored and corrected the same way.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from .errors import DatasetFormatError
from .metrics import evaluate_video, j_and_f, jaccard


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


def evaluate_expression(session, text: str, gt: np.ndarray | None, interactive: int = 0,
                        correct_with: str = "mask", others: np.ndarray | None = None) -> dict:
    """Score one expression in ``session`` (its object is removed afterwards).

    gt: (T, H, W) bool ground truth of the referred object (None: predict only); correct_with and
    others ((T, H, W) bool, the other annotated objects): how rounds correct (module docstring).
    Returns {"mask": (T, H, W) bool text-only prediction, "rounds": [scores after round 0..K]
    (fewer when the video has fewer than K frames to correct; from round 1 with the "frame" it
    corrected and whether that was "undone"), "corrected": [frames corrected, in
    order], "rejected": [frames whose prompt correction was undone (module docstring)]}.
    """
    return _propagate_and_score(session, session.add_object(text=text), gt, interactive, correct_with, others)


PROMPTS = ("text", "box", "click", "clicks", "click-neg", "box-neg")
CORRECTIONS = ("mask", *PROMPTS[1:])


def _nearest(ys: np.ndarray, xs: np.ndarray, y: float, x: float) -> tuple[int, int]:
    i = int(np.argmin((ys - y) ** 2 + (xs - x) ** 2))
    return int(xs[i]), int(ys[i])


def _grown(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a (2r+1)-square (no SciPy needed for a few pixels)."""
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy: dy + h, dx: dx + w]
    return out


def prompt_from_mask(mask: np.ndarray, kind: str, others: np.ndarray | None = None) -> dict:
    """The prompt a user would give for ``mask`` (H, W) bool, as ``add_object`` keywords:

    "box": its tight box (x0, y0, x1, y1, x1/y1 the last column/row, as ``objects.mask_box``);
    "click": one click on the mask pixel nearest its centre;
    "clicks": that click and one in each half of the mask (split across its longer side), on the
    pixel nearest the half's centre: three positive clicks;
    "click-neg": the centre click and a negative one where a user keeps a neighbour out: on the
    pixel of another object (``others`` (H, W) bool) nearest the centre or, with none in the
    frame, on the nearest background pixel 3 px or more off the object;
    "box-neg": the box and, where the box holds something else, a negative click on it: the pixel
    of another object in the box nearest the centre or, with none, the nearest background pixel
    in the box 2 px or more off the object (a ring's hole); none for a box the object fills.
    """
    from .video.objects import mask_box

    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    if kind in ("box", "box-neg"):
        box = tuple(int(v) for v in mask_box(mask))
        if kind == "box":
            return {"box": box}
        region = np.zeros_like(mask)
        region[box[1]: box[3] + 1, box[0]: box[2] + 1] = True
        negative = _negative_click(mask, others, region, 2, cy, cx)
        return {"box": box} if negative is None else {"box": box, "points": [negative], "labels": [0]}
    points, labels = [_nearest(ys, xs, cy, cx)], [1]
    if kind == "clicks":
        along_x = np.ptp(xs) >= np.ptp(ys)
        first = xs < cx if along_x else ys < cy
        for half in (first, ~first):
            if half.any():
                points.append(_nearest(ys[half], xs[half], ys[half].mean(), xs[half].mean()))
                labels.append(1)
    elif kind == "click-neg":
        negative = _negative_click(mask, others, np.ones_like(mask), 3, cy, cx)
        if negative is not None:
            points.append(negative)
            labels.append(0)
    return {"points": points, "labels": labels}


def _negative_click(mask, others, region, gap: int, cy: float, cx: float) -> tuple[int, int] | None:
    """Where a user clicks "not this" within ``region``: the pixel of another object nearest
    (cy, cx) or, with none there, the nearest background pixel ``gap`` px or more off the mask."""
    neighbour = region & others if others is not None else np.zeros_like(mask)
    away = neighbour if neighbour.any() else region & ~_grown(mask, gap)
    if not away.any():
        return None
    ys, xs = np.nonzero(away)
    return _nearest(ys, xs, cy, cx)


def evaluate_prompted_object(session, gt: np.ndarray, kind: str, interactive: int = 0,
                             others: np.ndarray | None = None, correct_with: str = "mask") -> dict | None:
    """Score one object started from a prompt (``prompt_from_mask``) on the first frame its ground
    truth shows it, propagated both ways (what "Add from prompts" does); None if it never shows.
    others: (T, H, W) bool, the other annotated objects (where "click-neg" and "box-neg" put their
    negative click, on the first frame and in prompt corrections).
    Returns what ``evaluate_expression`` does, plus "frame": the prompted frame."""
    shown = np.flatnonzero(gt.reshape(len(gt), -1).any(1))
    if not len(shown):
        return None
    frame = int(shown[0])
    obj = session.add_object(frame=frame, **prompt_from_mask(gt[frame], kind,
                                                             None if others is None else others[frame]))
    return {**_propagate_and_score(session, obj, gt, interactive, correct_with, others), "frame": frame}


def correction(session, frame: int, gt: np.ndarray, kind: str, others: np.ndarray | None = None) -> np.ndarray:
    """The (H, W) bool mask a user's correction of ``frame`` locks, for ground truth ``gt`` there:
    ``gt`` itself ("mask"), else the prediction from the prompt ``kind`` drawn for it (the module
    docstring); an object absent there is erased."""
    if kind == "mask" or not gt.any():
        return gt
    return session.predict_mask(frame, **prompt_from_mask(gt, kind, others))


def _propagate_and_score(session, obj: int, gt: np.ndarray | None, interactive: int, correct_with: str = "mask",
                         others: np.ndarray | None = None) -> dict:
    """Propagate the new object ``obj`` over the video, score it, run the interactive rounds (module
    docstring), and remove it."""
    try:
        for _ in session.propagate():
            pass
        mask = np.asarray(session.labels) == obj
        rounds, corrected, rejected = [], [], []
        if gt is not None:
            rounds.append(_score(mask, gt))
            for _ in range(int(interactive)):
                js = np.asarray(rounds[-1]["J_per_frame"], dtype=float)
                js[corrected + rejected] = np.inf  # a locked keyframe, or a frame the user has seen
                if not np.isfinite(js).any():  # every frame corrected: no round left to run
                    break
                worst = int(np.argmin(js))
                fix = correction(session, worst, gt[worst], correct_with, None if others is None else others[worst])
                if correct_with != "mask" and jaccard(fix, gt[worst]) <= js[worst]:
                    rejected.append(worst)  # undone: the frame keeps what it had (module docstring)
                    rounds.append({**rounds[-1], "frame": worst, "undone": True})
                    continue
                corrected.append(worst)
                session.set_mask(obj, worst, fix)
                for _ in session.propagate(start=worst):
                    pass
                rounds.append({**_score(np.asarray(session.labels) == obj, gt), "frame": worst, "undone": False})
        return {"mask": mask, "rounds": rounds, "corrected": corrected, "rejected": rejected}
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


def check_prompt(prompt: str, davis: bool, submission, correct_with: str = "mask", interactive: int = 0) -> None:
    """ValueError unless ``prompt`` is one of ``PROMPTS``, ``correct_with`` one of ``CORRECTIONS``,
    and both fit the protocol (``refsam eval`` calls this before loading the model)."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, got {prompt!r}")
    if correct_with not in CORRECTIONS:
        raise ValueError(f"correct_with must be one of {', '.join(CORRECTIONS)}, got {correct_with!r}")
    if correct_with != "mask" and interactive < 1:
        raise ValueError(f"--correct-with {correct_with} says how the --interactive rounds correct; "
                         "add --interactive K (K >= 1)")
    if prompt != "text" and (davis or submission):
        raise ValueError(f"--prompt {prompt} scores objects, not expressions: not with the Ref-DAVIS17 protocol "
                         "(--davis) or a submission (--submission)")


def _row(video: str, exp_id: str, text: str, obj_id, expression_set: str, result: dict) -> dict:
    return {"video": video, "exp_id": exp_id, "text": text, "obj_id": obj_id, "set": expression_set,
            "corrected": result["corrected"], "rejected": result["rejected"],
            **{k: result["rounds"][0][k] for k in ("J", "F", "J&F")},
            "rounds": [{k: r[k] for k in ("J", "F", "J&F")} for r in result["rounds"]]}


def evaluate_dataset(model, root, split: str | None = None, *, davis: bool = False, interactive: int = 0,
                     submission=None, max_videos: int | None = None, progress: bool = True,
                     prompt: str = "text", correct_with: str = "mask") -> dict:
    """Evaluate ``model`` on a dataset folder; see the module docstring for the protocol.

    prompt: "text" (every expression), or one of the other ``PROMPTS``: every annotated object
    started from that prompt (``prompt_from_mask``) on its first visible frame, without words (the
    SAM prompt path; its rows are objects, named "<prompt> @ frame t"). correct_with: what each
    interactive round locks on the worst frame (module docstring).

    Returns {"J", "F", "J&F" (text only), "rounds": [{"round", "J", "F", "J&F"}] (0 = text only),
    "corrections" (frames corrected, all rows), "rejected_corrections" (prompt corrections undone),
    "num_videos", "num_expressions", "per_expression": [...], "per_object": [...],
    "davis_sets": {set: {"J", "F", "J&F"}} (davis only)}.
    """
    from .data.ytvos import read_dataset, read_ref_davis
    from .video.session import VideoSession

    check_prompt(prompt, davis, submission, correct_with, interactive)
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
                if prompt != "text":  # one row per annotated object, started from its box / a click
                    for obj_id in sorted({o for _, _, o in video.expressions if o is not None}):
                        result = None if labels is None else evaluate_prompted_object(
                            session, labels == obj_id, prompt, interactive, _others(labels, obj_id), correct_with)
                        if result is not None:
                            per_expression.append(_row(name, "", f"{prompt} @ frame {result['frame']}", obj_id,
                                                       "", result))
                    continue
                for exp_id, text, obj_id in video.expressions:
                    known = labels is not None and obj_id is not None
                    others = _others(labels, obj_id) if known and correct_with != "mask" else None
                    result = evaluate_expression(session, text, labels == obj_id if known else None, interactive,
                                                 correct_with, others)
                    if writer is not None:
                        writer.add(name, exp_id, video.frame_names, result["mask"])
                    if result["rounds"]:
                        per_expression.append(_row(name, exp_id, text, obj_id,
                                                   video.expression_sets.get(exp_id, ""), result))
            finally:
                session.close()
        ok = True
    finally:
        if writer is not None:
            writer.close(ok)
    return summarize(per_expression, len(names), davis, interactive)


def _others(labels: np.ndarray, obj_id) -> np.ndarray:
    """(T, H, W) bool: the annotated objects other than ``obj_id``."""
    return (labels != obj_id) & (labels != 0)


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
           "corrections": sum(len(row.get("corrected", ())) for row in per_expression),
           "rejected_corrections": sum(len(row.get("rejected", ())) for row in per_expression),
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
