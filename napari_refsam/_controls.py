"""The dock widget's controls and their layout (``build_controls``); the widget's methods act."""
from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QPushButton, QVBoxLayout,
)

from ._model_panel import ModelPanel
from ._objects import ObjectTable
from ._prompts import set_click_sign
from ._restore import AUTOSAVE_SETTING, settings

DIRECTIONS = ("both", "forward", "backward")


def build_controls(widget) -> None:
    """Create ``widget``'s controls as attributes (layer_combo, expression, segment_button, ...)
    and lay them out: video and autosave folder, model, objects, progress, status."""
    widget.layer_combo = QComboBox()
    widget.layer_combo.currentIndexChanged.connect(widget._on_video_changed)
    widget.layer_combo.currentIndexChanged.connect(widget._offer_expressions)
    widget.model_panel = ModelPanel()
    widget.model_panel.load_requested.connect(widget.load_model)

    widget.expression = QLineEdit()
    widget.expression.setPlaceholderText("describe the object, e.g. “the red ball”")
    widget.expression.returnPressed.connect(lambda: widget.segment())
    widget.segment_button = QPushButton("Segment")
    widget.segment_button.clicked.connect(lambda: widget.segment())
    widget.direction = QComboBox()
    widget.direction.addItems(DIRECTIONS)
    widget.prompts_button = QPushButton("Add from prompts")
    widget.prompts_button.setToolTip("One object per rectangle (Shapes layer) / set of clicks (Points layer) "
                                     "on this frame")
    widget.prompts_button.clicked.connect(lambda: widget.add_from_prompts())
    widget.correct_button = QPushButton("Correct from prompts")
    widget.correct_button.setToolTip("Correct the selected object on this frame from one rectangle and/or clicks: "
                                     "the model's mask becomes a locked keyframe and is re-propagated")
    widget.correct_button.clicked.connect(lambda: widget.correct_from_prompts())
    widget.clicks_button = QPushButton("New clicks layer")
    widget.clicks_button.setToolTip("A Points layer for clicks on the frame shown (then Add from prompts, "
                                    "or Correct from prompts)")
    widget.clicks_button.clicked.connect(lambda: widget.add_clicks_layer())
    widget.negative_clicks = QCheckBox("Negative clicks (N)")
    widget.negative_clicks.setToolTip("Clicks made from now on in the clicks layers mark what is not the object "
                                      "(red); untick for clicks on it (green). N in a clicks layer switches.")
    widget.negative_clicks.toggled.connect(lambda on: set_click_sign(widget.viewer.layers, not on))
    widget.repropagate_button = QPushButton("Re-propagate from this frame")
    widget.repropagate_button.clicked.connect(lambda: widget.repropagate())
    widget.undo_button = QPushButton("Undo")
    widget.undo_button.clicked.connect(lambda: widget.undo())
    widget.cancel_button = QPushButton("Cancel")
    widget.cancel_button.clicked.connect(lambda: widget.cancel())
    widget.remove_button = QPushButton("Remove object")
    widget.remove_button.clicked.connect(lambda: widget.remove_object())
    widget.auto_repropagate = QCheckBox("Re-propagate after each paint stroke")
    widget.export_button = QPushButton("Export dataset…")
    widget.export_button.setToolTip("Add this video, its labels and expressions to a Ref-YouTube-VOS-style "
                                    "dataset folder (for refsam train / eval)")
    widget.export_button.clicked.connect(lambda: widget.export_dataset())

    objects = QGroupBox("Objects")
    grid = QGridLayout(objects)
    grid.addWidget(widget.expression, 0, 0, 1, 2)
    grid.addWidget(widget.segment_button, 0, 2)
    grid.addWidget(QLabel("Direction"), 1, 0)
    grid.addWidget(widget.direction, 1, 1)
    grid.addWidget(widget.prompts_button, 1, 2)
    grid.addWidget(widget.repropagate_button, 2, 0, 1, 2)
    grid.addWidget(widget.remove_button, 2, 2)
    grid.addWidget(widget.undo_button, 3, 0)
    grid.addWidget(widget.cancel_button, 3, 1)
    grid.addWidget(widget.export_button, 3, 2)
    grid.addWidget(widget.clicks_button, 4, 0)
    grid.addWidget(widget.negative_clicks, 4, 1)
    grid.addWidget(widget.correct_button, 4, 2)
    grid.addWidget(widget.auto_repropagate, 5, 0, 1, 3)
    widget.objects = ObjectTable()
    widget.objects.itemSelectionChanged.connect(widget._refresh_buttons)
    grid.addWidget(widget.objects, 6, 0, 1, 3)
    widget.frame_label = QLabel("")
    grid.addWidget(widget.frame_label, 7, 0, 1, 3)

    widget.autosave_edit = QLineEdit()
    widget.autosave_edit.setPlaceholderText("next to the video")
    widget.autosave_edit.setText(str(settings().value(AUTOSAVE_SETTING, "") or ""))
    widget.autosave_edit.editingFinished.connect(widget._remember_autosave_dir)
    browse = QPushButton("…")
    browse.setMaximumWidth(30)
    browse.clicked.connect(widget._choose_autosave_dir)
    widget.restore_button = QPushButton("Restore…")
    widget.restore_button.setToolTip("Restore a saved session file (an earlier one kept under a dated name, "
                                     "say) onto this video; its current session is kept aside")
    widget.restore_button.clicked.connect(lambda: widget.restore_saved_session())
    autosave_row = QHBoxLayout()
    autosave_row.addWidget(widget.autosave_edit)
    autosave_row.addWidget(browse)
    autosave_row.addWidget(widget.restore_button)

    widget.progress = QProgressBar()
    widget.status = QLabel("Load a model, pick a video, type an expression.")
    widget.status.setWordWrap(True)
    top = QFormLayout()
    top.addRow("Video", widget.layer_combo)
    top.addRow("Autosave to", autosave_row)
    layout = QVBoxLayout(widget)
    layout.addLayout(top)
    layout.addWidget(widget.model_panel)
    layout.addWidget(objects)
    layout.addWidget(widget.progress)
    layout.addWidget(widget.status)
    layout.addStretch(1)
