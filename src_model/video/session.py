"""VideoSession: all state of annotating one video, with propagation as a generator (SAM 2 style).

    session = VideoSession(model, "clip.mp4", cache_dir="~/.cache/refsam")
    a = session.add_object(text="the dog jumping over the fence")
    b = session.add_object(frame=0, box=(10, 20, 80, 90))       # or points=, labels= / mask=
    for t, labels_frame in session.propagate():                  # (H, W) ids, one frame at a time
        ...
    session.set_mask(a, 40, mask)                                # correction -> locked keyframe
    for t, labels_frame in session.propagate(start=40):          # up to the neighbouring keyframes
        ...
    with session.edit_group("correction"):                       # several edits, one undo step
        session.set_mask(a, 12, mask_a); session.set_mask(b, 12, mask_b)
    session.undo(); session.save("clip.refsam"); VideoSession.load(model, "clip.refsam")

Rules (DESIGN.md "Propagation semantics"; the engine is in propagation.py):
- Keyframes are locked: on its keyframe an object is exactly its keyframe mask, whatever runs.
- Overlaps: among the objects decoded on a frame the highest logit wins; a pixel where no logit
  exceeds the threshold is background. A run never takes pixels from an object it does not
  decode on that frame (``obj_ids`` restricts a run; the other objects keep their pixels).
- Each frame is committed whole (labels and chain state together), and ``cancel()`` is checked
  between frames: a cancelled run leaves every frame either wholly old or wholly new. Any edit
  (set_mask, add/remove_object, undo, a new propagate) cancels a run that has not finished.
  A frame that two passes of one run decode (objects going opposite ways) is committed twice.
- Every frame goes through the image encoder once (FeatureCache); runs only decode.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import PromptError
from .cache import DEFAULT_MAX_BYTES, FeatureCache, device_error
from .conditioned import ConditionedCache
from .history import Edit, EditHistory
from .labels import MEMMAP_BYTES, LabelStore, label_dtype
from .objects import PROMPT, TEXT, VideoObject, check_add_arguments, check_frame, check_mask
from .propagation import DIRECTIONS, KEY, decode_jobs, decode_prompt, frame_jobs, plan, resolve
from .source import VideoSource, open_video


class VideoSession:
    """One video, its objects, keyframes and labels (see the module docstring).

    model: RefSAM; video: path or (T, H, W[, C]) array or VideoSource; cache_dir: root of the disk
    feature cache (None: memory only); labels_path: a new .npy file to hold the labels as a memmap
    (default: memory, or a temporary file when the labels exceed ``memmap_bytes``).
    """

    def __init__(self, model, video, cache_dir=None, labels_path=None, *, batch_size: int | None = None,
                 max_cache_bytes: int = DEFAULT_MAX_BYTES, mask_threshold: float | None = None,
                 undo_depth: int = 20, contrast_limits=None, memmap_bytes: int = MEMMAP_BYTES):
        self.model = model
        self._owns_source = not isinstance(video, VideoSource)
        self.source = open_video(video, contrast_limits=contrast_limits)
        self.cache = None
        try:
            self.cache = FeatureCache(model, self.source, cache_dir, max_cache_bytes, batch_size)
            self.num_frames = len(self.source)
            self.frame_shape = (self.source.height, self.source.width)
            self._store = LabelStore((self.num_frames, *self.frame_shape), np.uint16, labels_path,
                                     memmap_bytes, temp_dir=self.cache.folder)
        except BaseException:  # a refused cache or labels_path: release what was opened
            if self.cache is not None:
                self.cache.close()
            if self._owns_source:
                self.source.close()
            raise
        self.mask_threshold = float(model.config.mask_threshold if mask_threshold is None else mask_threshold)
        self.undo_depth = max(1, int(undo_depth))
        self.settings = {"cache_dir": None if cache_dir is None else str(cache_dir), "batch_size": batch_size,
                         "max_cache_bytes": int(max_cache_bytes), "mask_threshold": self.mask_threshold,
                         "undo_depth": self.undo_depth,
                         "contrast_limits": None if contrast_limits is None else list(contrast_limits)}
        # F̄ + HDA and the decoder's first-layer projections per (expression, frame): what a
        # re-propagation reuses besides the frame features.
        self.conditioned = ConditionedCache(self.settings["max_cache_bytes"] // 4)
        self._objects: dict[int, VideoObject] = {}
        self._next_id = 1
        self._history = EditHistory(self.undo_depth)
        self._active: threading.Event | None = None  # cancel token of the unfinished run, if any
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- state
    @property
    def labels(self) -> np.ndarray:
        """(T, H, W) uint16 label volume (uint32 past 65535 objects); an np.memmap when on disk.

        Live storage: read it freely, change it through set_mask (that is what keyframes and undo see).
        """
        return self._store.array

    @property
    def keyframes(self) -> dict[int, list[int]]:
        """{object id: sorted locked frames}, for every object."""
        return {i: sorted(o.keyframes) for i, o in self._objects.items()}

    @property
    def objects(self) -> dict[int, dict]:
        """{object id: {"kind": "text"|"prompt", "text", "prompt", "keyframes"}}."""
        return {i: o.info() for i, o in self._objects.items()}

    def keyframe_mask(self, obj: int, frame: int) -> np.ndarray:
        """The locked (H, W) bool mask of ``obj`` on ``frame`` (read-only)."""
        o = self._object(obj)
        if frame not in o.keyframes:
            raise PromptError(f"object {obj} has no keyframe on frame {frame} (keyframes: {sorted(o.keyframes)})")
        return o.keyframes[frame]

    def _object(self, obj) -> VideoObject:
        is_id = isinstance(obj, (int, np.integer)) and not isinstance(obj, (bool, np.bool_))
        o = self._objects.get(int(obj)) if is_id else None
        if o is None:
            raise PromptError(f"unknown object {obj!r}; the session has objects {sorted(self._objects)}")
        return o

    # ----------------------------------------------------------------- objects
    def add_object(self, text: str | None = None, *, frame: int | None = None, box=None, points=None,
                   labels=None, mask=None) -> int:
        """Add an object; returns its id (1, 2, ...).

        text="...": a referring expression (needs trained RefSAM weights); optionally with frame= and
        mask= as a first keyframe. Otherwise a SAM prompt on ``frame``: box=(x0, y0, x1, y1) and/or
        points=[(x, y), ...] with labels=[1, 0, ...] (1 object, 0 background), or mask=(H, W) bool
        (which becomes a locked keyframe). Bad input raises PromptError/TextInputError and changes nothing.
        """
        text, frame, prompt, first_mask = check_add_arguments(
            text, frame, box, points, labels, mask, self.num_frames, *self.frame_shape)
        text_prompt = None if text is None else self.encode_text(text)
        with self._lock:
            self._stop_run()
            obj = VideoObject(self._next_id, TEXT if text is not None else PROMPT, self.num_frames,
                              self.model.config.sam.prompt_embed_dim, text=text, prompt=prompt,
                              text_prompt=text_prompt)
            if first_mask is not None and prompt is None and text is None:
                obj.prompt = {"frame": frame, "box": None, "points": None, "labels": None}
            edit = self._begin("add_object")
            self._next_id += 1
            if obj.id > 0xFFFF:
                self._store.promote(label_dtype(obj.id))
            self._objects[obj.id] = obj
            if first_mask is not None:
                self._set_keyframe(obj, frame, first_mask, edit)
            return obj.id

    def predict_mask(self, frame: int, box=None, points=None, labels=None) -> np.ndarray:
        """SAM's one-shot prediction on ``frame`` from a box and/or clicks (as ``add_object`` takes
        them) -> (H, W) bool; the frame is encoded if not cached. Changes nothing: a correction is
        ``set_mask(obj, frame, session.predict_mask(frame, ...))``, a locked keyframe."""
        if box is None and points is None:
            raise PromptError("predict_mask needs box= and/or points= (with labels=)")
        _, frame, prompt, _ = check_add_arguments(None, frame, box, points, labels, None, self.num_frames,
                                                  *self.frame_shape)
        try:
            cache = self.cache
            feats = cache.get(frame)  # may encode: outside the lock, as in a run
            with self._lock:  # the model and its cache stay as they are while it decodes
                if cache is not self.cache:  # use_model came in meanwhile: its own features
                    feats = self.cache.get(frame)
                return decode_prompt(self.model, feats, prompt, self.mask_threshold)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            raise device_error(exc, f"decoding frame {frame}") from exc

    def encode_text(self, text: str, model=None):
        """Expression -> TextPrompt (batch 1) on the model device; errors surface here, not later."""
        try:
            with torch.inference_mode():
                return (model or self.model).encode_text([text])
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            raise device_error(exc, f"encoding the expression {text!r}") from exc

    def use_model(self, model) -> None:
        """Go on with another model, in place: labels, objects, keyframes and undo steps stay.

        Frames are encoded again by the new weights (a new feature cache), and so are the
        expressions; the chain state of the old weights (τ) is dropped, as ``load`` does on other
        weights, so the next run starts each chain afresh. An expression the new model cannot
        take (plain SAM weights, say) raises PromptError and changes nothing.
        """
        with self._lock:
            if model is self.model:
                return
            objects = {id(o): o for o in [*self._objects.values(), *self._history.objects()]}.values()
            prompts = {o.text: self.encode_text(o.text, model) for o in objects if o.kind != PROMPT}
            self._stop_run()  # only once the new model has taken every expression
            settings = self.settings
            cache = FeatureCache(model, self.source, settings["cache_dir"], settings["max_cache_bytes"],
                                 settings["batch_size"])
            self.cache.close()
            self.model, self.cache = model, cache
            self.conditioned = ConditionedCache(settings["max_cache_bytes"] // 4)
            dim = model.config.sam.prompt_embed_dim
            for obj in objects:
                obj.forget_chain(dim)
                obj.text_prompt = prompts.get(obj.text) if obj.kind != PROMPT else None
            self._history.forget_chain_state(dim)

    def remove_object(self, obj: int) -> None:
        """Remove an object and its pixels from every frame (undoable)."""
        with self._lock:
            o = self._object(obj)
            self._stop_run()
            edit = self._begin("remove_object")
            for t in range(self.num_frames):
                frame = self._store.read(t)
                hit = frame == o.id
                if hit.any():
                    edit.save_frame(t, frame)
                    frame[hit] = 0
                    self._store.write(t, frame)
            del self._objects[o.id]
            if o.text is not None and all(other.text != o.text for other in self._objects.values()):
                self.conditioned.drop_text(o.text)

    def set_mask(self, obj: int, frame: int, mask) -> None:
        """Correct ``obj`` on ``frame``: ``mask`` (H, W) becomes a locked keyframe (empty = absent there).

        Its pixels leave other objects (and their keyframes on that frame). Re-propagate with
        ``propagate(start=frame)``.
        """
        with self._lock:
            o = self._object(obj)
            frame = check_frame(frame, self.num_frames)
            mask = check_mask(mask, *self.frame_shape)
            self._stop_run()
            self._set_keyframe(o, frame, mask, self._begin("set_mask"))

    def _set_keyframe(self, obj: VideoObject, frame: int, mask: np.ndarray, edit: Edit) -> None:
        locked = {}
        for other in self._objects.values():
            if other is not obj and frame in other.keyframes:
                trimmed = other.keyframes[frame] & ~mask
                trimmed.flags.writeable = False
                other.keyframes[frame] = trimmed
                locked[other.id] = trimmed
        obj.keyframes[frame] = mask
        locked[obj.id] = mask
        edit.save_state(obj, frame)
        obj.known[frame] = False  # τ stored there predates the correction
        old = self._store.read(frame)
        self._commit(frame, old, resolve(old, [], {}, locked, self.mask_threshold), edit)

    # ----------------------------------------------------------------- propagation
    def propagate(self, start: int | None = None, direction: str = "both", obj_ids=None):
        """Generator of (frame index, (H, W) labels of that frame) as frames are committed.

        start=None: the whole video; start=k: re-propagate from k up to each object's neighbouring
        keyframes. direction: "forward", "backward" or "both" (see propagation.plan). obj_ids: the
        objects to run (default all). Arguments are checked now; the run starts on iteration.
        """
        with self._lock:
            passes = self._plan(start, direction, obj_ids)
            self._stop_run()
            token = self._active = threading.Event()
        return self._run(passes, token)

    def planned_frames(self, start: int | None = None, direction: str = "both", obj_ids=None) -> int:
        """How many (frame, labels) items ``propagate`` with these arguments will yield (progress bars).

        A frame can come twice in a whole-video run: once per pass that decodes some object on it.
        """
        with self._lock:
            return sum(len(p.frames) for p in self._plan(start, direction, obj_ids))

    def _plan(self, start, direction, obj_ids):
        if direction not in DIRECTIONS:
            raise PromptError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if start is not None:
            start = check_frame(start, self.num_frames, "start frame")
        if isinstance(obj_ids, (int, np.integer)) and not isinstance(obj_ids, (bool, np.bool_)):
            obj_ids = [obj_ids]  # one object, given as its id
        ids = sorted(self._objects) if obj_ids is None else [self._object(i).id for i in obj_ids]
        if not ids:
            raise PromptError("the session has no objects to propagate; add_object first")
        return plan({i: self._objects[i] for i in ids}, self.num_frames, start, direction)

    def cancel(self) -> None:
        """Stop the unfinished propagation before its next frame (thread-safe; the generator ends)."""
        token = self._active
        if token is not None:
            token.set()

    def _stop_run(self) -> None:
        # Called (under the lock, so between two frames) by every edit: a run still going when the
        # user changes something is cancelled rather than carried on from a stale plan.
        if self._active is not None:
            self._active.set()
            self._active = None

    def _run(self, passes, token: threading.Event):
        edit = None
        self.conditioned.check((self.model.config.sam.image_size, self.model.encoder_dtype))
        try:
            for p in passes:
                running: dict[int, tuple] = {}
                last: tuple[int, np.ndarray] | None = None
                features = self.cache.iter_features(p.frames)
                try:
                    for t in p.frames:
                        if token.is_set():
                            return
                        _, feats = next(features)  # may encode a batch: outside the lock
                        with self._lock:
                            if token.is_set():  # an edit or cancel() came while encoding
                                return
                            if edit is None:
                                edit = self._begin("propagate")
                            frame = self._step(p, t, feats, running, last, edit)
                        last = (t, frame)
                        yield t, frame
                finally:
                    features.close()
        finally:
            with self._lock:
                if self._active is token:
                    self._active = None
                self._history.drop_if_empty(edit, self)

    def _step(self, p, t: int, feats, running: dict, last, edit: Edit) -> np.ndarray:
        """Decode every object active on frame ``t`` of pass ``p``, resolve, commit; returns the frame."""
        def mask_on(obj_id: int, frame: int) -> np.ndarray:
            labels = last[1] if last is not None and last[0] == frame else self._store.read(frame)
            return labels == obj_id

        pending = frame_jobs(self._objects, p.actions[t], t, p.step, running, self.num_frames, mask_on,
                             bool(self.model.heads_trained))
        try:
            with torch.inference_mode():
                result = decode_jobs(self.model, feats, [j for *_, j, _, _ in pending if j is not None],
                                     frame=t, cache=self.conditioned)
                locked = {i: o.keyframes[t] for i, o in self._objects.items() if t in o.keyframes}
                cleared = [o.id for o, action, *_ in pending if action != KEY]
                old = self._store.read(t)
                new = resolve(old, cleared, result.logits, locked, self.mask_threshold)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            raise device_error(exc, f"decoding frame {t}") from exc
        self._commit(t, old, new, edit)
        for obj, action, job, cond, use_track in pending:
            tau = result.taus.get(obj.id)
            edit.save_state(obj, t)
            obj.track[t] = np.nan if tau is None else tau  # NaN: this chain had no τ here
            obj.known[t] = True
            obj.cond[t] = cond
            running[obj.id] = (tau if use_track else None, cond, t)
        return new

    # ----------------------------------------------------------------- history
    @contextmanager
    def edit_group(self, name: str = "edit"):
        """Make every edit inside the block (set_mask, add/remove_object, propagations) one undo step
        named ``name``: one ``undo()`` reverts them all, e.g. a paint stroke that changed several
        objects and the re-propagation that followed it. Nested groups join the outermost one.
        The group belongs to the session, not the thread: edits from other threads meanwhile join it.
        """
        with self._lock:
            outer = self._history.open_group(name)
        try:
            yield self
        finally:
            if outer:
                with self._lock:
                    self._history.close_group(self)

    def _begin(self, name: str) -> Edit:
        return self._history.begin(name, self)

    def _commit(self, t: int, old: np.ndarray, new: np.ndarray, edit: Edit) -> None:
        if not np.array_equal(old, new):
            edit.save_frame(t, old)
            self._store.write(t, new)

    def undo(self) -> str | None:
        """Revert the last propagation, correction or object change; returns its name (None: nothing)."""
        with self._lock:
            self._stop_run()
            edit = self._history.pop()
            if edit is None:
                return None
            edit.revert(self)
            return edit.name

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    # ----------------------------------------------------------------- persistence, lifetime
    def save(self, path) -> Path:
        """Write the whole session to ``path`` atomically (see persist.py)."""
        from .persist import save_session

        with self._lock:  # between two frames of a run: a consistent snapshot
            return save_session(self, path)

    @classmethod
    def load(cls, model, path, video=None, **kwargs) -> "VideoSession":
        """Restore a saved session; ``video`` defaults to the path stored in it."""
        from .persist import load_session

        return load_session(cls, model, path, video, **kwargs)

    def close(self) -> None:
        """Stop any run, release the cache, the label file (temporary ones are deleted) and the video."""
        with self._lock:  # never under a frame being decoded by a worker thread
            self._stop_run()
            self.cache.close()
            self._store.close()
            if self._owns_source:
                self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"VideoSession({self.source.name!r}, frames={self.num_frames}, "
                f"size={self.frame_shape[1]}x{self.frame_shape[0]}, objects={sorted(self._objects)})")
