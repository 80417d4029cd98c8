"""The error types users see. Each names what was expected and what was found.

All derive from ``RefSAMError`` so the CLI and the napari plugin can show them as one-line
messages instead of tracebacks; each also derives from the builtin it refines so ordinary
``except ValueError`` code keeps working.
"""
from __future__ import annotations


class RefSAMError(Exception):
    """Base class of every error this package raises on purpose."""


class VideoReadError(RefSAMError, ValueError):
    """A video, TIFF stack, frame folder or array cannot be read (names the file and frame)."""


class CheckpointError(RefSAMError, ValueError):
    """A weights file is of the wrong variant, truncated, of the wrong format or mismatched."""


class TextInputError(RefSAMError, ValueError):
    """An expression is empty, or the text encoder cannot be found offline."""


class PromptError(RefSAMError, ValueError):
    """A box, point, mask or object id does not fit the video or the session."""


class DatasetFormatError(RefSAMError, ValueError):
    """An annotation file or dataset folder is malformed (names the file and the problem)."""


class CacheMismatchError(RefSAMError, ValueError):
    """An on-disk feature cache was written for another model, video or preprocessing."""


class CancelledError(RefSAMError):
    """A long-running operation was cancelled by the user between two units of work."""


class TrainingDivergedError(RefSAMError, ArithmeticError):
    """The training loss or the weights became non-finite (names the step and what to change)."""
