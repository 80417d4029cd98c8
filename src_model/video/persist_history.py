"""The undo history inside a session file, so a restored session can still undo what was done
before it was saved.

Entries (under ``history/``): ``history.json`` (the steps, oldest first, and every object they
refer to), ``masks/<k>.npy`` (keyframe masks, each once: steps share them by reference, and a
step's "nothing changed" test compares them by identity, so they are shared again on reading),
``objects/<k>/{track,known,cond}.npy`` (the chain state of objects no longer in the session: a
removal the user may undo), ``steps/<i>/{run_starts,run_ids,zlib}.npy`` (the old label
frames as ``history.pack_frame`` records them, each kind concatenated over the step's frames)
and ``steps/<i>/{track,known,cond}.npy`` (the old chain state rows). Objects still in the
session are referred to by id and are the session's own.
"""
from __future__ import annotations

import json
import zipfile

import numpy as np

from .history import Edit
from .objects import PROMPT, VideoObject, check_mask

ROOT = "history/"


def write_history(archive: zipfile.ZipFile, session, npy) -> None:
    """Add ``session``'s undo steps to the open ``archive`` (``npy``: array -> .npy bytes)."""
    edits = list(session._history._edits)
    if not edits:
        return
    masks: dict[int, int] = {}  # id(mask) -> key

    def mask_key(mask) -> int:
        if id(mask) not in masks:
            masks[id(mask)] = len(masks)
            archive.writestr(f"{ROOT}masks/{masks[id(mask)]}.npy", npy(np.asarray(mask)))
        return masks[id(mask)]

    objects: dict[int, dict] = {}  # id(obj) -> its entry

    def object_key(obj) -> int:
        if id(obj) not in objects:
            key = len(objects)
            entry = {"key": key, "id": obj.id}
            if session._objects.get(obj.id) is not obj:  # gone from the session: saved whole
                entry.update(kind=obj.kind, text=obj.text, prompt=obj.prompt,
                             keyframes=[[t, mask_key(m)] for t, m in obj.keyframes.items()])
                for name in ("track", "known", "cond"):
                    archive.writestr(f"{ROOT}objects/{key}/{name}.npy", npy(getattr(obj, name)))
            objects[id(obj)] = entry
        return objects[id(obj)]["key"]

    steps = []
    for i, edit in enumerate(edits):
        # One entry per kind of record and step, not per frame: a long video's step has
        # thousands of frames, and a zip entry costs a header and a directory record each.
        frames, starts, ids, blobs = [], [], [], []
        for t, record in edit.frames.items():
            kind, data, *rest = record
            if kind == "runs":
                starts.append(data)
                ids.append(rest[0].astype(np.uint64))
                frames.append([t, kind, list(rest[1]), rest[2], len(data)])
            else:
                blobs.append(np.frombuffer(data, np.uint8))
                frames.append([t, kind, list(rest[1]), rest[2], len(data), rest[0]])
        if starts:
            archive.writestr(f"{ROOT}steps/{i}/run_starts.npy", npy(np.concatenate(starts)))
            archive.writestr(f"{ROOT}steps/{i}/run_ids.npy", npy(np.concatenate(ids)))
        if blobs:
            archive.writestr(f"{ROOT}steps/{i}/zlib.npy", npy(np.concatenate(blobs)))
        states = list(edit.states.values())
        if states:
            archive.writestr(f"{ROOT}steps/{i}/track.npy", npy(np.stack([s[1] for s in states])))
            archive.writestr(f"{ROOT}steps/{i}/known.npy", npy(np.array([s[2] for s in states], bool)))
            archive.writestr(f"{ROOT}steps/{i}/cond.npy", npy(np.array([s[3] for s in states], bool)))
        steps.append({
            "name": edit.name, "next_id": edit.next_id, "frames": frames,
            "table": [[i_, object_key(o)] for i_, o in edit.table.items()],
            "keyframes": [[i_, [[t, mask_key(m)] for t, m in kf.items()]] for i_, kf in edit.keyframes.items()],
            "states": [[object_key(obj), t] for (_, t), (obj, *_) in edit.states.items()],
        })
    # Keyframes of the session's own objects that a step holds too: the same array on reading.
    shared = [[o.id, t, masks[id(m)]] for o in session._objects.values() for t, m in o.keyframes.items()
              if id(m) in masks]
    meta = {"objects": sorted(objects.values(), key=lambda e: e["key"]), "steps": steps, "shared_keyframes": shared}
    archive.writestr(f"{ROOT}history.json", json.dumps(meta))


def read_history(archive: zipfile.ZipFile, session, read_npy, same_model: bool) -> None:
    """Give ``session`` (restored from ``archive``, objects and labels in place) the saved undo
    steps; ``read_npy(name)`` reads one entry. Files without a history leave it empty."""
    if f"{ROOT}history.json" not in archive.namelist():
        return
    meta = json.loads(archive.read(f"{ROOT}history.json"))
    height, width = session.frame_shape
    masks: dict[int, np.ndarray] = {}

    def mask(key: int) -> np.ndarray:
        if key not in masks:
            masks[key] = check_mask(read_npy(f"{ROOT}masks/{key}.npy"), height, width)
        return masks[key]

    dim = session.model.config.sam.prompt_embed_dim
    objects: dict[int, VideoObject] = {}
    for entry in meta["objects"]:
        if "kind" not in entry:  # still in the session
            objects[entry["key"]] = session._objects[int(entry["id"])]
            continue
        obj = VideoObject(int(entry["id"]), entry["kind"], session.num_frames, dim, text=entry["text"],
                          prompt=entry["prompt"])
        obj.keyframes = {int(t): mask(k) for t, k in entry["keyframes"]}
        if obj.kind != PROMPT:
            obj.text_prompt = session.encode_text(obj.text)
        if same_model:
            for name in ("track", "known", "cond"):
                saved = read_npy(f"{ROOT}objects/{entry['key']}/{name}.npy")
                setattr(obj, name, saved.astype(getattr(obj, name).dtype))
        objects[entry["key"]] = obj
    for obj_id, t, key in meta["shared_keyframes"]:
        session._objects[int(obj_id)].keyframes[int(t)] = mask(key)
    edits = []
    for i, step in enumerate(meta["steps"]):
        edit = Edit.__new__(Edit)  # filled from the file, not from the session as it is now
        edit.name, edit.next_id = step["name"], int(step["next_id"])
        edit.table = {int(i_): objects[k] for i_, k in step["table"]}
        edit.keyframes = {int(i_): {int(t): mask(k) for t, k in kf} for i_, kf in step["keyframes"]}
        edit.frames = {}
        kinds = {kind for _, kind, *_ in step["frames"]}
        starts = read_npy(f"{ROOT}steps/{i}/run_starts.npy") if "runs" in kinds else None
        ids = read_npy(f"{ROOT}steps/{i}/run_ids.npy") if "runs" in kinds else None
        blobs = read_npy(f"{ROOT}steps/{i}/zlib.npy") if "zlib" in kinds else None
        at = {"runs": 0, "zlib": 0}
        for t, kind, shape, dtype, size, *stored in step["frames"]:
            begin, at[kind] = at[kind], at[kind] + int(size)
            if kind == "runs":
                record = (kind, starts[begin: at[kind]], ids[begin: at[kind]].astype(np.dtype(dtype)), tuple(shape),
                          dtype)
            else:
                record = (kind, blobs[begin: at[kind]].tobytes(), stored[0], tuple(shape), dtype)
            edit.frames[int(t)] = record
        edit.states = {}
        if step["states"]:
            track, known, cond = (read_npy(f"{ROOT}steps/{i}/{name}.npy") for name in ("track", "known", "cond"))
            for row, (key, t) in enumerate(step["states"]):
                obj = objects[key]
                edit.states[(obj.id, int(t))] = (obj, track[row].astype(np.float32), bool(known[row]), bool(cond[row]))
        edits.append(edit)
    history = session._history
    history._edits = edits[-history.depth:]
    if not same_model:  # τ of other weights means nothing to this model (as ``use_model``)
        history.forget_chain_state(dim)
