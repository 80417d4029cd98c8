"""segment_anything imports without torchvision, and official checkpoints load strictly."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from src_model.config import SAM_PRESETS
from src_model.errors import CheckpointError
from src_model.sam import build_sam, import_segment_anything, read_sam_checkpoint
from src_model.weights import load_refsam


def test_import_without_torchvision_leaves_no_stand_in():
    code = (
        "import importlib.util, sys\n"
        "has_tv = importlib.util.find_spec('torchvision') is not None\n"
        "from src_model.sam import import_segment_anything\n"
        "sa = import_segment_anything()\n"
        "assert hasattr(sa, 'SamPredictor') and hasattr(sa, 'SamAutomaticMaskGenerator')\n"
        "assert ('torchvision' in sys.modules) == has_tv, 'stand-in leaked into sys.modules'\n"
        "print('ok', has_tv)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ok")


def test_stand_in_resize_matches_pil_bilinear():
    import numpy as np
    from PIL import Image

    from src_model.sam import _pil_resize, _to_pil_image

    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ours = np.asarray(_pil_resize(_to_pil_image(image), (64, 91)))
    ref = np.asarray(Image.fromarray(image).resize((91, 64), Image.BILINEAR))
    assert ours.shape == (64, 91, 3) and np.array_equal(ours, ref)


def test_automatic_mask_generator_nms_stand_in():
    from src_model.sam import _batched_nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    idxs = torch.tensor([0, 0, 0, 1])
    assert _batched_nms(boxes, scores, idxs, 0.5).tolist() == [3, 0, 2]


@pytest.mark.parametrize("preset", ["vit_b", "vit_l", "vit_h"])
def test_official_shapes_parameter_totals(preset):
    with torch.device("meta"):
        sam = build_sam(SAM_PRESETS[preset])
    total = sum(p.numel() for p in sam.parameters())
    expected = {"vit_b": 93_735_472, "vit_l": 312_342_832, "vit_h": 641_090_608}[preset]
    assert total == expected
    assert sam.image_encoder.pos_embed.shape == (1, 64, 64, SAM_PRESETS[preset].encoder_embed_dim)


def _save_official(sam, path):
    torch.save(sam.state_dict(), path)


def test_tiny_checkpoint_loads_with_zero_missing_keys(tmp_path):
    import_segment_anything()
    torch.manual_seed(3)
    sam = build_sam(SAM_PRESETS["tiny"])
    path = tmp_path / "sam_tiny.pth"
    _save_official(sam, path)
    model = load_refsam(None, preset="tiny", sam_checkpoint=path, text_encoder=False, device="cpu")
    for key, value in sam.state_dict().items():
        assert torch.equal(model.sam.state_dict()[key], value), key
    assert model.heads_trained is False


@pytest.mark.slow
def test_vit_b_checkpoint_in_official_layout(tmp_path):
    torch.manual_seed(0)
    sam = build_sam(SAM_PRESETS["vit_b"])
    path = tmp_path / "sam_vit_b_01ec64.pth"
    _save_official(sam, path)
    state = read_sam_checkpoint(path)
    assert set(state) == set(sam.state_dict())
    model = load_refsam(None, preset="vit_b", sam_checkpoint=path, text_encoder=False, device="cpu")
    assert torch.equal(model.sam.image_encoder.blocks[3].attn.qkv.weight, sam.image_encoder.blocks[3].attn.qkv.weight)


def test_wrong_variant_names_both_and_keys(tmp_path):
    sam = build_sam(SAM_PRESETS["tiny"])
    path = tmp_path / "tiny.pth"
    _save_official(sam, path)
    with pytest.raises(CheckpointError) as err:
        load_refsam(None, preset="vit_b", sam_checkpoint=path, text_encoder=False, device="cpu")
    message = str(err.value)
    assert "SAM tiny checkpoint" in message and "SAM vit_b" in message
    assert "image_encoder." in message and "missing" in message


def test_truncated_checkpoint(tmp_path):
    sam = build_sam(SAM_PRESETS["tiny"])
    path = tmp_path / "full.pth"
    _save_official(sam, path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_sam_checkpoint(cut)


def test_safetensors_given_as_sam_checkpoint(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="expected an official PyTorch .pth"):
        read_sam_checkpoint(path)
