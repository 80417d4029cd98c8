"""napari-refsam: the napari plugin (thin; all work goes through src_model.VideoSession)."""
__version__ = "0.1.0"
