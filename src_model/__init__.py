"""RefSAM: referring video object segmentation on Segment Anything (model + video engine, no Qt).

Public API (DESIGN.md): ``load_refsam``, ``VideoSession``; ``src_model.metrics.jaccard/f_measure``.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_refsam", "VideoSession", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import src_model` (e.g. for the CLI's --help) does not import torch.
    if name == "load_refsam":
        from .weights import load_refsam

        return load_refsam
    if name == "VideoSession":
        from .video.session import VideoSession

        return VideoSession
    raise AttributeError(f"module 'src_model' has no attribute {name!r}")
