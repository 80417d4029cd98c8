"""The model picker: bundled default, a RefSAM weights file, or an official SAM checkpoint.

It only gathers ``load_refsam`` arguments; loading happens in the widget's worker thread.
"""
from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QPushButton, QWidget,
)

KINDS = (
    ("default", "Bundled default model"),
    ("refsam", "RefSAM weights file (.safetensors)"),
    ("sam", "Official SAM checkpoint (.pth, prompts only)"),
)
PRESETS = ("vit_b", "vit_l", "vit_h", "tiny")
DEVICES = ("auto", "cuda", "mps", "cpu")


class _PathField(QWidget):
    def __init__(self, caption: str, filters: str, parent=None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(caption)
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(lambda: self._browse(caption, filters))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit)
        row.addWidget(browse)

    def _browse(self, caption, filters):
        path, _ = QFileDialog.getOpenFileName(self, caption, "", filters)
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()


class ModelPanel(QGroupBox):
    """Emits ``load_requested`` when Load is pressed; ``load_kwargs()`` gives the arguments."""

    load_requested = Signal()

    def __init__(self, parent=None):
        super().__init__("Model", parent)
        self.kind = QComboBox()
        for key, text in KINDS:
            self.kind.addItem(text, key)
        self.weights = _PathField("RefSAM weights (.safetensors)", "RefSAM weights (*.safetensors)")
        self.sam_checkpoint = _PathField("SAM checkpoint (.pth), optional for RefSAM files",
                                         "SAM checkpoints (*.pth *.pt)")
        self.preset = QComboBox()
        self.preset.addItems(PRESETS)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_requested)
        form = QFormLayout(self)
        form.addRow("Model", self.kind)
        form.addRow("Weights", self.weights)
        form.addRow("SAM", self.sam_checkpoint)
        form.addRow("SAM preset", self.preset)
        form.addRow("Device", self.device)
        form.addRow(self.load_button)
        self.kind.currentIndexChanged.connect(self._update_enabled)
        self._update_enabled()

    def _update_enabled(self) -> None:
        kind = self.kind.currentData()
        self.weights.setEnabled(kind == "refsam")
        self.sam_checkpoint.setEnabled(kind in ("refsam", "sam"))
        self.preset.setEnabled(kind == "sam")  # RefSAM files carry their own preset

    def set_choice(self, kind: str, weights: str = "", sam_checkpoint: str = "", preset: str = "vit_b",
                   device: str = "auto") -> None:
        """Fill the picker programmatically (tests, scripts)."""
        self.kind.setCurrentIndex([k for k, _ in KINDS].index(kind))
        self.weights.edit.setText(weights)
        self.sam_checkpoint.edit.setText(sam_checkpoint)
        self.preset.setCurrentText(preset)
        self.device.setCurrentText(device)

    def load_kwargs(self) -> dict:
        """Arguments for ``load_refsam``; ValueError with a user-facing message when incomplete."""
        kind = self.kind.currentData()
        device = self.device.currentText()
        sam = self.sam_checkpoint.text() or None
        if kind == "default":
            return {"weights": "default", "device": device}
        if kind == "refsam":
            if not self.weights.text():
                raise ValueError("choose a RefSAM weights file (.safetensors) first")
            return {"weights": self.weights.text(), "sam_checkpoint": sam, "device": device}
        if not sam:
            raise ValueError("choose an official SAM checkpoint (.pth) first")
        return {"weights": None, "preset": self.preset.currentText(), "sam_checkpoint": sam, "device": device}
