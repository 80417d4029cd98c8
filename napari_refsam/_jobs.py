"""Job bodies: what each widget action asks of the engine, run in the worker thread.

Each is a generator driven by ``_workers.run_job``; it talks only to ``src_model`` (model,
VideoSession) and reports through the items it yields:

    ("session", session)      a session was created or restored (the widget adopts it)
    ("object", obj_id)        an object was added
    ("frame", t, labels)      propagation wrote frame t
    ("status", text)          a long step began
    ("progress", n)           n frames done by a step that shows no labels (a dataset export)
    ("warning", text)         something non-fatal failed (e.g. the autosave)
    ("saved", path)           the session was autosaved to path (recorded, not shown)

Keeping them free of Qt means the CLI-equivalent logic is visible in one place and the plugin
stays a thin shell around VideoSession.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._autosave import save_session, set_aside
from ._corrections import apply_strokes
from ._workers import propagate_frames


def load_model(kwargs: dict):
    """Build the model with ``load_refsam(**kwargs)`` (seconds to minutes: weights, text encoder)."""
    from src_model.accel import tune_cpu_allocator
    from src_model.weights import load_refsam

    tune_cpu_allocator()  # the plugin is an application entry point: CPU passes ~25% faster
    what = kwargs.get("weights") or f"SAM {kwargs.get('preset')}"
    yield ("status", f"Loading model {what}…")
    return load_refsam(**kwargs)


def _ensure_session(session, model, video, save_to=None):
    if session is not None:
        return session
    from src_model.video.session import VideoSession

    yield ("status", "Opening video…")
    session = VideoSession(model, video)
    if save_to is not None and Path(save_to).is_file():
        # An autosave this new session would replace, never offered or not restored (say, the video
        # was opened while another run was starting): the earlier work is kept under a dated name.
        try:
            kept = set_aside(Path(save_to))
        except OSError as exc:
            session.close()
            raise OSError(f"the earlier session {save_to} is in the way and could not be kept aside: {exc}") from exc
        yield ("warning", f"RefSAM: an earlier session of this video was kept as {kept}")
    yield ("session", session)
    return session


def autosave(session, path):
    """Save the session atomically (the engine writes a temporary file and renames it)."""
    if path is None:
        return
    yield ("status", "Autosaving…")
    try:
        save_session(session, path)
    except Exception as exc:  # noqa: BLE001 - the work itself succeeded; only the backup failed
        yield ("warning", f"RefSAM autosave to {path} failed: {exc}")
        return False
    yield ("saved", str(path))
    return True


def segment(session, model, video, text: str, token, save_to=None, **propagate_kwargs):
    """Add a text object and propagate it over the whole video (one undo step). Returns its id."""
    session = yield from _ensure_session(session, model, video, save_to)
    with session.edit_group("segment"):
        obj = session.add_object(text=text)
        yield ("object", obj)
        yield ("status", f"Segmenting “{text}”…")
        try:
            yield from propagate_frames(session, token, obj_ids=[obj], **propagate_kwargs)
        finally:
            yield from autosave(session, save_to)
    return obj


def add_prompts(session, model, video, frame: int, prompts, token, direction: str, save_to=None):
    """Add one object per prompt on ``frame`` (box / points) and propagate them (one undo step).
    Returns the ids."""
    session = yield from _ensure_session(session, model, video, save_to)
    requests = [_prompt_object(session, frame, prompt) for prompt in prompts]  # all checked: none or all added
    ids = []
    with session.edit_group("prompt objects"):
        for kwargs in requests:
            obj = session.add_object(**kwargs)
            ids.append(obj)
            yield ("object", obj)
        yield ("status", f"Propagating {len(ids)} prompt object(s)…")
        try:
            yield from propagate_frames(session, token, start=frame, direction=direction, obj_ids=ids)
        finally:
            yield from autosave(session, save_to)
    return ids


def _prompt_object(session, frame: int, prompt) -> dict:
    """``add_object`` arguments for one prompt, checked against the video (PromptError if bad) by
    the engine's own checks, so every prompt is known good before the first object is added."""
    from src_model.video.objects import check_add_arguments

    height, width = session.frame_shape
    points = prompt.points or None
    _, frame, checked, _ = check_add_arguments(None, frame, prompt.box, points, prompt.labels if points else None,
                                               None, session.num_frames, height, width)
    return {"frame": frame, "box": None if checked["box"] is None else tuple(checked["box"]),
            "points": checked["points"], "labels": checked["labels"]}


def correct_from_prompt(session, obj: int, frame: int, prompt, token, direction: str, save_to=None):
    """Correct object ``obj`` on ``frame`` from one box / set of clicks: the model's prediction
    there (``VideoSession.predict_mask``) becomes a locked keyframe, re-propagated from the frame
    (one undo step). An empty prediction, or Cancel while the frame is encoded, changes nothing
    (PromptError / None)."""
    from src_model.errors import PromptError

    kwargs = _prompt_object(session, frame, prompt)
    token.session = session
    mask = session.predict_mask(**kwargs)
    if token.cancelled:
        return None
    if not mask.any():
        raise PromptError(f"the prompt on frame {frame} gives an empty mask; nothing was changed (draw the box "
                          "round the object, or click on it)")
    with session.edit_group("correction from prompts"):
        session.set_mask(obj, frame, mask)
        yield ("frame", frame, np.array(session.labels[frame]))
        yield ("status", f"Re-propagating object {obj} from frame {frame}…")
        try:
            yield from propagate_frames(session, token, start=frame, direction=direction, obj_ids=[obj])
        finally:
            yield from autosave(session, save_to)
    return obj


def correct(session, strokes, token, direction: str, propagate: bool, save_to=None, model=None, video=None):
    """Lock user-painted pixels as keyframes, then (optionally) re-propagate from each frame.

    strokes: ``_corrections.stroke_changes`` dicts in painting order; only the objects a stroke
    touched become keyframes, and a label no object has becomes a new object. Only those objects
    are re-propagated from the frame: the others keep every pixel they had. The corrections and
    their re-propagation are one undo step. Returns {painted label: new object id}.
    session None: the session of ``video`` is made with ``model`` first (a mask painted before any
    expression: its labels become the first objects).
    """
    session = yield from _ensure_session(session, model, video, save_to)
    with session.edit_group("correction"):
        frames, new_ids = apply_strokes(session, strokes)
        for obj in new_ids.values():
            yield ("object", obj)
        for t in frames:
            yield ("frame", t, np.array(session.labels[t]))
        try:
            if propagate:
                for t, objs in frames.items():
                    if objs:
                        yield ("status", f"Re-propagating from frame {t}…")
                        yield from propagate_frames(session, token, start=t, direction=direction,
                                                    obj_ids=objs)
        finally:
            yield from autosave(session, save_to)
    return new_ids


def repropagate(session, frame: int, token, direction: str, save_to=None):
    """Re-propagate every object from ``frame`` (up to the neighbouring keyframes)."""
    yield ("status", f"Re-propagating from frame {frame}…")
    try:
        yield from propagate_frames(session, token, start=frame, direction=direction)
    finally:
        yield from autosave(session, save_to)


def restore(model, path, video, offered: bool = False, replacing=None, keep_to=None):
    """``VideoSession.load`` of a saved session, on the video the widget shows.

    offered: ``path`` is this video's autosave, offered without the user picking it. It is only
    restored if it was saved for this very video: a session of another video (a same-named one
    sharing the autosave folder, say) or of this video before it changed is set aside, as is one
    that does not fit the video or cannot be read, so the next autosave of a fresh session does not
    replace it. Other failures (the model, memory) and files the user picked leave the file where
    it is; a picked file may be restored onto a changed video, with a warning.

    keep_to: the video's autosave file, for a file the user picked: once that file has loaded,
    what the autosave holds is kept under a dated name (``replacing``, the session the video has
    now, saved there first, then closed; if that fails, the restore fails and it stays as it
    was), and the restored session is autosaved there, so it is what comes back next time.
    """
    from src_model.errors import CacheMismatchError, DatasetFormatError, VideoReadError
    from src_model.video.session import VideoSession

    yield ("status", f"Restoring session from {path}…")
    notes = []  # the engine's warnings, said as this job's: a warnings.warn in this thread may never show
    try:
        session = VideoSession.load(model, path, video=video, same_video=offered, warn=notes.append)
    except (VideoReadError, DatasetFormatError, CacheMismatchError) as exc:
        if not offered:
            raise
        try:
            kept = set_aside(Path(path))
        except OSError as err:
            yield ("warning", f"RefSAM: the saved session {path} could not be set aside ({err}); "
                              "the next autosave will replace it")
        else:
            yield ("warning", f"RefSAM: the saved session was not restored ({exc}); it was kept as {kept}")
        raise
    aside = keep_to is not None and Path(keep_to).resolve() != Path(path).resolve()
    if aside:
        try:
            kept = _keep_aside(replacing, Path(keep_to))
        except BaseException:
            session.close()
            raise
        if kept is not None:
            yield ("warning", f"RefSAM: the session this video had was kept as {kept}")
    for note in notes:
        yield ("warning", f"RefSAM: {note}")
    yield ("session", session)
    if replacing is not None:
        replacing.close()
    if aside:
        yield from autosave(session, keep_to)
    return session


def _keep_aside(session, autosave_file: Path) -> Path | None:
    """Save ``session`` (if any) to the autosave file, then rename that file to a dated name."""
    if session is not None:
        save_session(session, autosave_file)
    return set_aside(autosave_file) if autosave_file.is_file() else None


def switch_model(session, model, save_to=None):
    """Move a session to another model in place (``VideoSession.use_model``): labels, objects,
    keyframes and undo steps are kept; frames and expressions are encoded again by the new weights."""
    yield ("status", "Moving the session to the new model…")
    session.use_model(model)
    yield ("session", session)
    yield from autosave(session, save_to)
    return session


def save_all(moves):
    """Save each session where the Autosave-to folder now puts it: ``moves`` holds (session, new
    file, old file or None). A session already at the new place (an older one of the same video)
    is kept under a dated name first; once saved, the old file is too, so it is not offered again."""
    for session, path, old in moves:
        if Path(path).is_file():
            kept = set_aside(Path(path))
            yield ("warning", f"RefSAM: an earlier session in the autosave folder was kept as {kept}")
        saved = yield from autosave(session, path)
        if saved and old is not None and Path(old).is_file() and Path(old).resolve() != Path(path).resolve():
            set_aside(Path(old))


def save(session, path):
    """A job that only saves (after Undo / Remove, which run on the GUI thread)."""
    yield from autosave(session, path)
