"""The object list of the RefSAM widget: label id, colour, expression or prompt, keyframes."""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ._reader import EXPRESSIONS_KEY

COLUMNS = ("id", "", "object", "keyframes")


def frame_ranges(frames) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1-3, 7, 9-10": long keyframe lists stay readable in one cell."""
    frames = sorted(int(f) for f in frames)
    parts = []
    start = prev = None
    for f in frames:
        if prev is not None and f == prev + 1:
            prev = f
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = f
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def describe(info: dict) -> str:
    """One line for an object: its expression, or what prompt made it."""
    if info.get("text"):
        return str(info["text"])
    prompt = info.get("prompt") or {}
    kind = info.get("kind") or "prompt"
    frame = prompt.get("frame")
    at = f" @ frame {frame}" if frame is not None else ""
    if prompt.get("box") is not None:
        x0, y0, x1, y1 = (int(round(float(v))) for v in prompt["box"])
        return f"box ({x0}, {y0})-({x1}, {y1}){at}"
    if prompt.get("points") is not None:
        return f"{len(prompt['points'])} point(s){at}"
    # Neither box nor clicks: the object started from a mask (a stroke with a new label).
    return f"painted mask{at}" if kind == "prompt" else f"{kind}{at}"


def keyframe_note(frame: int, keyframes: dict) -> str:
    """The current-frame display: "frame 12 — keyframe for objects 1, 3" (or just "frame 12")."""
    owners = sorted(obj for obj, frames in keyframes.items() if frame in frames)
    if not owners:
        return f"frame {frame}"
    noun = "object" if len(owners) == 1 else "objects"
    return f"frame {frame} — keyframe for {noun} {', '.join(str(o) for o in owners)}"


class ObjectTable(QTableWidget):
    """Read-only table of the session's objects; the selected row picks the object to act on."""

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        self.setMinimumHeight(120)

    def update_objects(self, objects: dict, keyframes: dict, color_of=None) -> None:
        """Rebuild from ``session.objects`` / ``session.keyframes``; ``color_of(id)`` -> RGBA floats."""
        selected = self.selected_object()
        self.setRowCount(0)
        for row, obj in enumerate(sorted(objects)):
            info = objects[obj] or {}
            self.insertRow(row)
            id_item = QTableWidgetItem(str(obj))
            id_item.setData(Qt.ItemDataRole.UserRole, int(obj))
            self.setItem(row, 0, id_item)
            swatch = QTableWidgetItem("")
            if color_of is not None:
                rgba = np.asarray(color_of(obj), dtype=float).ravel()
                if rgba.size >= 3:
                    swatch.setBackground(QColor.fromRgbF(*(float(c) for c in rgba[:3])))
            self.setItem(row, 1, swatch)
            text = describe(info)
            desc = QTableWidgetItem(text)
            desc.setToolTip(text)
            self.setItem(row, 2, desc)
            self.setItem(row, 3, QTableWidgetItem(frame_ranges(keyframes.get(obj, ()))))
            if obj == selected:
                self.selectRow(row)

    def object_ids(self) -> list[int]:
        return [int(self.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(self.rowCount())]

    def selected_object(self) -> int | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        if not rows:
            return None
        item = self.item(rows[0].row(), 0)
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))


def known_expressions(metadata: dict) -> list[str]:
    """The expressions a video layer comes with ({obj_id: [expression, ...]}: the sample's, a
    dataset video's), for completions in the expression field."""
    known = metadata.get(EXPRESSIONS_KEY) or {}
    lists = known.values() if isinstance(known, dict) else [known]
    return sorted({str(text) for texts in lists for text in (texts if isinstance(texts, list) else [texts])})
