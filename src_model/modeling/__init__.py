"""RefSAM modules, one family per file (segment_anything style)."""
from .adapter import Adapter, AdaptedImageEncoder
from .cross_modal import CrossModalMLP
from .decoder import predict_masks
from .hda import DenseAttention, HierarchicalDenseAttention
from .refsam import DecodeOutput, FrameFeatures, RefSAM
from .tracking import ImplicitTrackingModule

__all__ = [
    "Adapter", "AdaptedImageEncoder", "CrossModalMLP", "predict_masks", "DenseAttention",
    "HierarchicalDenseAttention", "DecodeOutput", "FrameFeatures", "RefSAM", "ImplicitTrackingModule",
]
