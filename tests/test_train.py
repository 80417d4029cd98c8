"""Training: losses, prompt perturbation, a few real steps (tiny and the paper's ViT-B), resume, CLI."""
from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
import torch

from src_model.losses import dice_loss, mask_losses, sigmoid_focal_loss
from src_model.train import PRETRAINED_LRS, SCRATCH_LR, TrainOptions, learning_rates, lr_factor, progress, train
from src_model.train_clip import perturb_masks

FROZEN_PREFIXES = ("sam.image_encoder.", "sam.prompt_encoder.", "text_encoder.")


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, model) -> set[str]:
    after = model.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def _options(tmp_path, **kw) -> TrainOptions:
    base = dict(data="synthetic", out=str(tmp_path / "run"), preset="tiny", steps=2, batch_size=1,
                num_frames=2, synthetic_size=64, synthetic_frames=4, device="cpu", log_every=1,
                save_every=1, progress=False, prompt_dropout=0.5, keyframe_prob=0.5, seed=3)
    base.update(kw)
    return TrainOptions(**base)


# ----------------------------------------------------------------------------- losses
def test_dice_and_focal_hand_values():
    target = torch.zeros(1, 2, 2, dtype=torch.bool)
    target[0, 0, 0] = True
    confident = torch.where(target, 20.0, -20.0).float()
    assert dice_loss(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    assert sigmoid_focal_loss(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    zero = torch.zeros(1, 2, 2)
    # p = 0.5 everywhere: dice = 1 - (2*0.5 + 1) / (2 + 1 + 1) = 0.5
    assert dice_loss(zero, target).item() == pytest.approx(0.5)
    # focal at p = 0.5: ce = ln 2, (1 - p_t)^2 = 0.25; alpha 0.25 on the 1 positive, 0.75 on 3 negatives
    expected = math.log(2) * 0.25 * (0.25 * 1 + 0.75 * 3) / 4
    assert sigmoid_focal_loss(zero, target).item() == pytest.approx(expected, rel=1e-5)
    # An empty target predicted empty costs nothing (fully occluded objects).
    empty = torch.zeros(1, 2, 2, dtype=torch.bool)
    assert dice_loss(torch.full((1, 2, 2), -30.0), empty).item() == pytest.approx(0.0, abs=1e-6)
    losses = mask_losses(zero, target)
    assert losses["loss"].item() == pytest.approx(losses["dice"].item() + losses["focal"].item())


def test_perturbed_masks_stay_near_the_original():
    masks = torch.zeros(20, 32, 32, dtype=torch.bool)
    masks[:, 10:20, 8:22] = True
    out = perturb_masks(masks, torch.Generator().manual_seed(0), strength=3)
    assert out.shape == masks.shape and out.dtype == torch.bool
    for m in out:
        if m.any():  # one in ten is dropped on purpose
            inter = (m & masks[0]).sum().item()
            union = (m | masks[0]).sum().item()
            assert inter / union > 0.2


def test_learning_rates_and_schedule():
    assert learning_rates(TrainOptions(), False) == PRETRAINED_LRS
    scratch = learning_rates(TrainOptions(), True)
    assert set(scratch.values()) == {SCRATCH_LR} and "image_encoder" in scratch
    assert learning_rates(TrainOptions(lrs={"itm": 5e-5, "hda": None}), False)["itm"] == 5e-5
    assert set(learning_rates(TrainOptions(lr=1e-3), True).values()) == {1e-3}
    with pytest.raises(ValueError, match="unknown part"):
        learning_rates(TrainOptions(lrs={"vision": 1.0}), False)
    opts = TrainOptions(steps=100, warmup=10, schedule="cosine")
    assert lr_factor(0, progress(0, 0, opts), opts) == pytest.approx(0.1)
    assert lr_factor(50, progress(50, 0, opts), opts) == pytest.approx(0.505, abs=0.01)
    assert lr_factor(100, progress(100, 0, opts), opts) == pytest.approx(0.01)
    timed = TrainOptions(steps=1000, max_minutes=1.0)
    assert progress(10, 30.0, timed) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- real steps
def test_tiny_frozen_sam_two_steps_change_only_trainable_parts(tmp_path, text_encoder):
    from src_model.weights import load_refsam

    torch.manual_seed(0)
    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    before = _snapshot(model)
    result = train(_options(tmp_path), model=model)
    assert result["step"] == 2 and math.isfinite(result["loss_first"]) and math.isfinite(result["loss_last"])
    changed = _changed(before, model)
    assert changed, "no parameter moved"
    assert not [k for k in changed if k.startswith(FROZEN_PREFIXES)], "a frozen parameter changed"
    assert any(k.startswith("adapters.") for k in changed) and any(k.startswith("itm.") for k in changed)
    with open(tmp_path / "run" / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"step", "loss", "dice", "focal", "iou", "lr", "time"}
    assert (tmp_path / "run" / "refsam.safetensors").is_file()


def test_from_scratch_trains_every_sam_part(tmp_path, text_encoder):
    from src_model.weights import ALL_PARTS, load_refsam, read_refsam_file

    torch.manual_seed(0)
    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    before = _snapshot(model)
    train(_options(tmp_path, steps=1, from_scratch=True), model=model)
    changed = _changed(before, model)
    assert any(k.startswith("sam.image_encoder.") for k in changed)
    assert not [k for k in changed if k.startswith("text_encoder.")]
    config, state = read_refsam_file(tmp_path / "run" / "refsam.safetensors")
    assert tuple(config["parts"]) == ALL_PARTS and config["trained_from_scratch"]
    assert any(k.startswith("sam.image_encoder.") for k in state)
    reloaded = load_refsam(tmp_path / "run" / "refsam.safetensors", text_encoder=text_encoder, device="cpu")
    assert torch.equal(reloaded.state_dict()["itm.norm3.weight"], model.state_dict()["itm.norm3.weight"])


def test_resume_reproduces_an_uninterrupted_run(tmp_path, text_encoder):
    straight = train(_options(tmp_path / "a", steps=3, from_scratch=True, image_size=64,
                              text_encoder=None))["model"]
    train(_options(tmp_path / "b", steps=2, from_scratch=True, image_size=64))
    resumed = train(_options(tmp_path / "b", steps=3, from_scratch=True, image_size=64, resume=True))["model"]
    a, b = straight.state_dict(), resumed.state_dict()
    assert resumed.config.sam.image_size == 64
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with open(tmp_path / "b" / "run" / "train_log.csv") as handle:
        assert [r["step"] for r in csv.DictReader(handle)] == ["1", "2", "3"]


def test_training_on_a_dataset_folder_via_the_cli(tmp_path):
    from src_model.cli import main
    from src_model.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", 2, seed=5, split="train", num_frames=4, size=(64, 64))
    out = tmp_path / "run"
    common = ["train", "--data", str(tmp_path / "data"), "--split", "train", "--steps", "1", "--batch-size", "1",
              "--accum", "2", "--num-frames", "2", "--device", "cpu", "--no-progress"]
    assert main([*common, "--refine-prob", "0.5", "--out", str(tmp_path / "r")]) == 2  # needs --box-prob
    rc = main([*common, "--image-size", "64", "--from-scratch", "--inference-image-size", "128", "--out", str(out),
               "--export", str(tmp_path / "m.safetensors"), "--box-prob", "0.5", "--refine-prob", "0.5"])
    assert rc == 0
    assert (out / "checkpoint.pt").is_file() and (tmp_path / "m.safetensors").is_file()
    assert main(["train", "--data", str(tmp_path / "missing"), "--steps", "1", "--out", str(out)]) == 2
    # Fine-tuning trains at the weights' native size and carries their recommended size on.
    assert main([*common, "--weights", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "ft"),
                 "--export", str(tmp_path / "ft.safetensors")]) == 0
    assert main([*common, "--weights", str(tmp_path / "m.safetensors"), "--inference-image-size", "100",
                 "--out", str(tmp_path / "bad")]) == 2  # not a multiple of the 8-px patch
    from src_model.weights import read_refsam_file

    for name in ("m", "ft"):
        config, _ = read_refsam_file(tmp_path / f"{name}.safetensors")
        assert config["inference_image_size"] == 128 and config["config"]["sam"]["image_size"] == 64
    # Fine-tuning without --from-scratch freezes SAM; no official checkpoint holds it, so the export
    # keeps it: the fine-tuned file runs the very same image encoder.
    (_, base), (config, tuned) = (read_refsam_file(tmp_path / f"{n}.safetensors") for n in ("m", "ft"))
    encoder = [k for k in base if k.startswith("sam.image_encoder.")]
    assert encoder and all(torch.equal(base[k], tuned[k]) for k in encoder) and not config["trained_from_scratch"]


def test_recommended_inference_size_is_what_load_refsam_runs(tmp_path, text_encoder):
    """A file's recommended encoder input size (inference_image_size) is load_refsam's default;
    an explicit image_size wins; the native size stays what the file saves."""
    from src_model.weights import ALL_PARTS, load_refsam, save_refsam, set_inference_image_size

    torch.manual_seed(0)
    path = save_refsam(load_refsam(None, preset="tiny", text_encoder=False, device="cpu"), tmp_path / "t.safetensors",
                       parts=ALL_PARTS)
    assert load_refsam(path, text_encoder=False, device="cpu").config.sam.image_size == 256
    set_inference_image_size(path, 384)
    model = load_refsam(path, text_encoder=False, device="cpu")
    assert model.config.sam.image_size == 384 and model.native_config.sam.image_size == 256
    with torch.no_grad():  # the encoder really runs at 384 px: a 48x48 embedding (8-px patches)
        assert model.encode_frames(np.zeros((1, 40, 40, 3), np.uint8)).embedding.shape[-2:] == (48, 48)
    assert load_refsam(path, text_encoder=False, device="cpu", image_size=128).config.sam.image_size == 128
    with pytest.raises(ValueError, match="multiple of the patch size"):
        set_inference_image_size(path, 100)
    set_inference_image_size(path, None)
    assert load_refsam(path, text_encoder=False, device="cpu").config.sam.image_size == 256


def _tiny_bert_1024(folder):
    """A random 1-layer BERT with 1024-d features (T5/RoBERTa-large size) + MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from src_model.text import minilm_folder

    config = BertConfig(hidden_size=1024, num_hidden_layers=1, num_attention_heads=16,
                        intermediate_size=1024, vocab_size=30522)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm_folder())).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        source = minilm_folder() / name
        if source.is_file() and not (folder / name).is_file():
            shutil.copy(source, folder / name)
    return folder


def test_paper_vit_b_configuration_trains_on_cpu(tmp_path):
    """Frozen SAM ViT-B + adapters + a 1024-d text encoder, random weights, 2 steps at 224 px.

    About 30 s on one CPU core (most of it building the 94 M-parameter SAM), so not marked slow.
    """
    from src_model.text import TextEncoder
    from src_model.weights import load_refsam

    encoder = TextEncoder(_tiny_bert_1024(tmp_path / "bert1024"))
    assert encoder.dim == 1024
    torch.manual_seed(0)
    model = load_refsam(None, preset="vit_b", text_encoder=encoder, device="cpu")
    assert model.config.text_dim == 1024
    model.set_image_size(224)  # 14x14 tokens = one 14x14 window: the same modules at a CPU-friendly size
    before = _snapshot(model)
    result = train(_options(tmp_path, steps=2, synthetic_size=64), model=model)
    assert math.isfinite(result["loss_first"]) and math.isfinite(result["loss_last"])
    changed = _changed(before, model)
    assert not [k for k in changed if k.startswith(FROZEN_PREFIXES)]
    for part in ("adapters.", "text_mlp.", "hda.", "itm.", "sam.mask_decoder."):
        assert any(k.startswith(part) for k in changed), part


_DDP_SCRIPT = '''
import os, sys
import torch
from src_model.train import TrainOptions, train
out = sys.argv[1]
result = train(TrainOptions(data="synthetic", out=out, preset="tiny", steps=2, batch_size=1, num_frames=2,
                            synthetic_size=64, synthetic_frames=4, image_size=64, from_scratch=True,
                            device="cpu", threads=1, progress=False, seed=1, log_every=1))
state = result["model"].state_dict()
digest = sum(float(v.double().sum()) for k, v in state.items() if not k.startswith("text_encoder."))
with open(os.path.join(out, "rank%s.txt" % os.environ["RANK"]), "w") as handle:
    handle.write(repr(digest))
'''


def test_torchrun_two_cpu_processes_stay_in_sync(tmp_path):
    """DDP path on CPU (gloo): two ranks see different clips but end with identical weights."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "rank0.txt").read_text() == (out / "rank1.txt").read_text()
    with open(out / "train_log.csv") as handle:  # written once, by rank 0
        assert [r["step"] for r in csv.DictReader(handle)] == ["1", "2"]


def test_rows_sharing_a_clip_decode_like_separate_clips(tiny_model):
    """clip_forward with several objects per clip (the clip encoded once) gives each row the
    logits it gets when its clip is passed on its own, row by row."""
    from src_model.data.synthetic import generate_clip
    from src_model.train_clip import TextCache, clip_forward

    clip = generate_clip(5, num_frames=3, size=(64, 64), num_objects=3)
    frames = torch.from_numpy(clip.frames)[None]
    ids = sorted(clip.objects)
    masks = torch.stack([torch.from_numpy(clip.labels == o) for o in ids])
    texts = [clip.objects[o]["expressions"][0] for o in ids]
    words, word_mask = TextCache(tiny_model.text_encoder)(texts, tiny_model.device)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        _, grouped = clip_forward(tiny_model, frames, masks, words, word_mask, 0.0, 0.0, generator,
                                  clip_of_row=torch.zeros(len(ids), dtype=torch.long))
        for row in range(len(ids)):
            _, alone = clip_forward(tiny_model, frames, masks[row:row + 1], words[row:row + 1],
                                    word_mask[row:row + 1], 0.0, 0.0, generator)
            torch.testing.assert_close(grouped[row], alone[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(grouped[0], grouped[1])  # different words, different masks


def test_training_with_several_objects_per_clip(tmp_path, text_encoder):
    from src_model.weights import load_refsam

    torch.manual_seed(0)
    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")
    result = train(_options(tmp_path, batch_size=2, objects_per_clip=3), model=model)
    assert result["step"] == 2 and math.isfinite(result["loss_last"])


def test_cli_keeps_earlier_runs_and_refuses_bad_or_diverging_learning_rates(tmp_path, capsys):
    from src_model.cli import main
    from src_model.data.synthetic import write_synthetic_dataset
    from src_model.weights import read_refsam_file

    write_synthetic_dataset(tmp_path / "data", 1, seed=3, split="train", num_frames=3, size=(64, 64))
    common = ["train", "--data", str(tmp_path / "data"), "--split", "train", "--steps", "1", "--batch-size", "1",
              "--num-frames", "2", "--image-size", "64", "--from-scratch", "--device", "cpu", "--no-progress"]
    out = tmp_path / "run"
    assert main([*common, "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert main([*common, "--out", str(out)]) == 2  # forgot --resume: hours of training must not vanish
    assert "--resume" in capsys.readouterr().err and (out / "checkpoint.pt").read_bytes() == before
    assert main([*common, "--out", str(out), "--overwrite"]) == 0
    for lr in ("nan", "-1", "inf"):
        assert main([*common, "--lr", lr, "--out", str(tmp_path / "x")]) == 2
        assert "finite number > 0" in capsys.readouterr().err
    diverge = tmp_path / "diverge"
    assert main([*common, "--steps", "3", "--save-every", "1", "--warmup", "0", "--lr", "1e30",
                 "--out", str(diverge)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lower the learning rate" in err
    if (diverge / "refsam.safetensors").exists():  # what was saved before the divergence is finite
        _, state = read_refsam_file(diverge / "refsam.safetensors")
        assert all(bool(torch.isfinite(v).all()) for v in state.values())


def test_worker_processes_build_the_same_batches_across_epochs():
    from torch.utils.data import DistributedSampler

    from src_model.data.synthetic_stream import SyntheticClipDataset
    from src_model.train_data import micro_batches, step_batches

    dataset = SyntheticClipDataset(length=5, num_frames=2, clip_frames=4, size=48, seed=2, objects_per_clip=2)
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=2, drop_last=True)
    # 2 items per step, 4 per epoch: 4 steps of 2 micro-batches cross two epoch boundaries, and
    # an epoch shows other objects/frames of the same clips, so a worker on the wrong epoch differs.
    def take(workers):
        stream = micro_batches(dataset, step_batches(sampler, 2, 2), batch_size=1, accum=2, workers=workers)
        return [next(stream) for _ in range(8)]

    inline, pooled = take(0), take(2)
    assert len({b["video"][0] for b in inline}) > 1
    for a, b in zip(inline, pooled):
        assert a["video"] == b["video"] and a["text"] == b["text"] and a["frame_indices"] == b["frame_indices"]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
    epoch0 = SyntheticClipDataset(length=5, num_frames=2, clip_frames=4, size=48, seed=2, objects_per_clip=2)
    epoch1 = SyntheticClipDataset(length=5, num_frames=2, clip_frames=4, size=48, seed=2, objects_per_clip=2)
    epoch1.set_epoch(1)
    differ = [i for i in range(5) if epoch0[i]["text"] != epoch1[i]["text"] or epoch0[i]["frame_indices"] != epoch1[i]["frame_indices"]]
    assert differ, "epochs must differ for this test to catch a worker on the wrong epoch"


def test_training_with_data_workers_matches_training_without(tmp_path, text_encoder):
    runs = [train(_options(tmp_path / f"w{w}", steps=3, from_scratch=True, image_size=64, workers=w))["model"]
            for w in (0, 2)]
    a, b = (m.state_dict() for m in runs)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_perturbed_masks_equal_a_per_row_reference_with_the_same_draws():
    import torch.nn.functional as F

    torch.manual_seed(1)
    masks = torch.rand(60, 12, 14) > 0.6
    strength = 2
    out = perturb_masks(masks, torch.Generator().manual_seed(5), strength=strength)
    # The same draws, in the order perturb_masks takes them, applied row by row the obvious way.
    g = torch.Generator().manual_seed(5)
    shift = torch.randint(-strength, strength + 1, (60, 2), generator=g)
    radius = torch.randint(0, strength + 1, (60,), generator=g)
    dilate = torch.rand(60, generator=g) < 0.5
    drop = torch.rand(60, generator=g) < 0.1
    kinds = set()
    for i, m in enumerate(masks):
        want = torch.roll(m.float(), (int(shift[i, 0]), int(shift[i, 1])), dims=(0, 1))
        r = int(radius[i])
        if r:
            pool = F.max_pool2d(want[None, None], 2 * r + 1, 1, r)[0, 0] if dilate[i] else \
                -F.max_pool2d(-want[None, None], 2 * r + 1, 1, r)[0, 0]
            want = pool
        if drop[i]:
            want = torch.zeros_like(want)
        assert torch.equal(out[i], want > 0.5), i
        kinds.add("drop" if drop[i] else (r, bool(dilate[i]) if r else None))
    assert len(kinds) == 6  # no change of size, both radii grown and shrunk, and drops all occur

def test_an_unreadable_annotation_is_one_line_with_or_without_workers(tmp_path, capsys):
    from src_model.cli import main
    from src_model.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", 2, seed=5, split="train", num_frames=4, size=(64, 64))
    for png in (tmp_path / "data" / "train" / "Annotations").rglob("*.png"):
        png.write_bytes(b"not a png")
    for workers in ("0", "2"):
        rc = main(["train", "--data", str(tmp_path / "data"), "--split", "train", "--steps", "1", "--batch-size", "1",
                   "--num-frames", "2", "--device", "cpu", "--no-progress", "--from-scratch", "--image-size", "64",
                   "--workers", workers, "--out", str(tmp_path / f"run{workers}")])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and "cannot read annotation" in err and ".png" in err
        assert "Traceback" not in err and "DataLoader worker" not in err and len(err.splitlines()) == 1, err
        # Nothing was trained: no run folder left that a rerun without --resume would refuse.
        assert not (tmp_path / f"run{workers}").exists()


def test_data_workers_end_with_a_failed_run(tmp_path, text_encoder):
    import multiprocessing

    from src_model.errors import TrainingDivergedError

    before = set(multiprocessing.active_children())
    with pytest.raises(TrainingDivergedError) as failure:  # raised by the step, the batch stream paused
        train(_options(tmp_path, from_scratch=True, image_size=64, workers=2, steps=6, lr=1e30, warmup=0))
    # The traceback (kept by a notebook or a caller) holds train's frame; its workers must be gone.
    assert failure.value.__traceback__ is not None
    assert set(multiprocessing.active_children()) - before == set()


def test_videos_of_different_frame_sizes_train_in_one_batch(tmp_path, capsys):
    """An exported dataset of videos from different cameras: clips are resized to the most common
    frame size (said once on stderr) instead of failing at the first batch that mixes two."""
    from src_model.cli import main
    from src_model.data.synthetic import write_synthetic_dataset
    from src_model.train_data import common_frame_size
    from src_model.data.ytvos import read_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(data, 2, seed=5, split="train", num_frames=4, size=(64, 80))
    write_synthetic_dataset(data, 1, seed=6, split="train", num_frames=4, size=(48, 64))
    assert common_frame_size(read_dataset(data, "train")) == (64, 80)
    # Videos without annotations (nothing to train on) do not choose the size.
    write_synthetic_dataset(data, 2, seed=7, split="train", num_frames=4, size=(48, 64))
    for name in read_dataset(data, "train"):
        if name.endswith(("7000000", "7000001")):
            shutil.rmtree(data / "train" / "Annotations" / name)
    capsys.readouterr()
    rc = main(["train", "--data", str(data), "--split", "train", "--steps", "3", "--batch-size", "3",
               "--num-frames", "2", "--device", "cpu", "--no-progress", "--from-scratch", "--image-size", "64",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "2 frame sizes" in err and "64x80" in err and "skipping 2 video(s)" in err
    # One clip per batch keeps each clip's own size: nothing is stretched, nothing said.
    assert main(["train", "--data", str(data), "--split", "train", "--steps", "2", "--batch-size", "1",
                 "--num-frames", "2", "--device", "cpu", "--no-progress", "--from-scratch", "--image-size", "64",
                 "--out", str(tmp_path / "run1")]) == 0
    assert "frame sizes" not in capsys.readouterr().err
    assert main(["train", "--data", str(data / "train" / "meta_expressions.json"), "--steps", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- refused before any work
# Streamed 64-px clips into a 64-px tiny model: a step takes well under a second on one core.
_FAST = ["train", "--data", "synthetic", "--synthetic-size", "64", "--synthetic-frames", "4", "--batch-size", "1",
         "--num-frames", "2", "--image-size", "64", "--from-scratch", "--device", "cpu", "--no-progress"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("refsam train: error:"), err
    return err


def test_resume_refuses_a_damaged_checkpoint_in_one_line(tmp_path, capsys):
    import io

    from src_model.cli import main

    out = tmp_path / "run"
    assert main([*_FAST, "--steps", "1", "--out", str(out)]) == 0
    ckpt = out / "checkpoint.pt"
    good, log = ckpt.read_bytes(), (out / "train_log.csv").read_bytes()
    not_ours = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, not_ours)
    for damaged in (good[: len(good) // 2], b"garbage\n", b"", not_ours.getvalue()):
        ckpt.write_bytes(damaged)
        capsys.readouterr()
        assert main([*_FAST, "--steps", "2", "--resume", "--out", str(out)]) == 2
        err = _one_line_error(capsys)
        assert str(ckpt) in err and "not a checkpoint of refsam train" in err and "another --out" in err
        assert "weights_only" not in err  # torch's advice to unpickle an unknown file: never passed on
        assert ckpt.read_bytes() == damaged and (out / "train_log.csv").read_bytes() == log


def test_resume_with_other_model_options_names_them(tmp_path, capsys, text_encoder):
    from src_model.cli import main
    from src_model.errors import CheckpointError
    from src_model.weights import load_refsam

    out = tmp_path / "run"
    assert main([*_FAST, "--steps", "1", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    resume = [*_FAST, "--steps", "2", "--resume", "--out", str(out)]
    assert main([*resume, "--image-size", "128"]) == 2  # the later flag wins
    err = _one_line_error(capsys)
    assert "--image-size 64 (now 128)" in err and "size mismatch" not in err
    assert main([a for a in resume if a != "--from-scratch"]) == 2
    assert "--from-scratch on (now off)" in _one_line_error(capsys)
    assert (out / "checkpoint.pt").read_bytes() == before
    # A model built outside the options, of another shape: one line too, not torch's screenful.
    torch.manual_seed(0)
    model = load_refsam(None, preset="tiny", text_encoder=text_encoder, device="cpu")  # 256 px
    with pytest.raises(CheckpointError, match="holds another model"):
        train(_options(tmp_path, steps=2, from_scratch=True, image_size=64, resume=True), model=model)
    # The default spelled out is the same option: the run goes on.
    assert main([*resume, "--text-encoder", "all-MiniLM-L6-v2"]) == 0
    assert "resumed from" in capsys.readouterr().err


def test_bad_sizes_and_data_leave_no_run_folder(tmp_path, capsys):
    from src_model.cli import main
    from src_model.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", 1, seed=5, split="train", num_frames=4, size=(64, 64))
    folder = [a if a != "synthetic" else str(tmp_path / "data") for a in _FAST] + ["--split", "train", "--steps", "1"]
    out = tmp_path / "run"
    for flag, value in [("--size", "0"), ("--size", "-8"), ("--synthetic-size", "16"), ("--synthetic-frames", "0"),
                        ("--threads", "-1"), ("--image-size", "0")]:
        data = _FAST if flag.startswith("--synthetic") else folder
        assert main([*data, flag, value, "--out", str(out)]) == 2, flag
        assert flag in _one_line_error(capsys)
        assert not out.exists(), flag
    assert main([*folder, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a" / "b")]) == 2
    assert "no such folder" in _one_line_error(capsys) and not (tmp_path / "a").exists()


def test_out_or_export_in_the_way_is_refused_up_front(tmp_path, capsys):
    from src_model.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for out in (notes, notes / "run"):
        assert main([*_FAST, "--steps", "1", "--out", str(out)]) == 2
        err = _one_line_error(capsys)
        assert f"{notes} is a file, not a folder" in err and "Errno" not in err
    assert notes.read_text() == "mine"
    out = tmp_path / "run"
    (tmp_path / "exports").mkdir()
    assert main([*_FAST, "--steps", "1", "--out", str(out), "--export", str(tmp_path / "exports"), "--overwrite"]) == 2
    assert "is a folder" in _one_line_error(capsys)
    # --resume too: found at the first save, the training before it would be lost.
    assert main([*_FAST, "--steps", "1", "--out", str(out), "--resume",
                 "--export", str(tmp_path / "nowhere" / "m.safetensors")]) == 2
    assert "does not exist" in _one_line_error(capsys) and not out.exists()


# ----------------------------------------------------------------------------- small exports, the log
def _one_expression_dataset(root):
    """The README's `segment --text ... --dataset` export in miniature: one video, one expression."""
    import json

    from src_model.data.synthetic import write_synthetic_dataset

    folder = write_synthetic_dataset(root, 1, seed=5, split="train", num_frames=4, size=(64, 64))
    meta_path = folder / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    (video,) = meta["videos"].values()
    first = sorted(video["expressions"])[0]
    video["expressions"] = {first: video["expressions"][first]}
    meta_path.write_text(json.dumps(meta))
    return folder


def test_a_one_expression_dataset_trains_with_the_default_batch_size(tmp_path, capsys):
    from src_model.cli import main

    data = _one_expression_dataset(tmp_path / "data")
    common = ["train", "--data", str(data), "--num-frames", "2", "--image-size", "64", "--from-scratch",
              "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]  # --batch-size 2, the default
    capsys.readouterr()
    assert main([*common, "--steps", "1"]) == 0
    note = capsys.readouterr().err.strip()
    assert len(note.splitlines()) == 1, note
    assert "1 item" in note and "expression with a mask" in note and "--batch-size 1" in note, note
    # A resume shrinks the step the same way (the data offset counts its items) and goes on.
    assert main([*common, "--steps", "2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert note in err and "resumed from" in err
    with open(tmp_path / "run" / "train_log.csv") as handle:
        assert [r["step"] for r in csv.DictReader(handle)] == ["1", "2"]
    # Steps that fit say nothing; accum goes down only when one clip per micro-batch is too many.
    assert main([*common, "--batch-size", "1", "--steps", "1", "--overwrite"]) == 0
    assert "item" not in capsys.readouterr().err
    assert main([*common, "--batch-size", "1", "--accum", "3", "--steps", "1", "--overwrite"]) == 0
    assert "--accum 1 instead" in capsys.readouterr().err
    # An empty dataset is still refused as such, in one line.
    meta = data / "meta_expressions.json"
    meta.write_text(meta.read_text().replace('"obj_id"', '"no_obj_id"'))
    assert main([*common, "--steps", "1", "--out", str(tmp_path / "empty")]) == 2
    assert "no expressions with object ids and masks" in _one_line_error(capsys)


def test_the_logged_lr_is_the_largest_of_the_parts(tmp_path):
    """Fine-tuning keeps the mask decoder at 1e-6 while the heads train at 1e-4; the log shows the
    largest rate (here --lr-itm's), warm-up included, not the first parameter group's."""
    from src_model.cli import main

    fine_tune = [a for a in _FAST if a != "--from-scratch"]
    out = tmp_path / "run"
    assert main([*fine_tune, "--steps", "2", "--warmup", "2", "--lr-itm", "3e-4", "--log-every", "1",
                 "--out", str(out)]) == 0
    with open(out / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["lr"]) for r in rows] == pytest.approx([1.5e-4, 3e-4])


# ----------------------------------------------------------------------------- prompt rows
def test_mask_boxes_jitter_and_clicks_follow_the_masks():
    from src_model.train_clip import inside_clicks, jitter_boxes, mask_boxes
    from src_model.video.objects import mask_box

    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 24, 40)) > 0.97)
    masks[4] = False  # an empty mask has no box
    masks[5] = False
    masks[5, 23, 39] = True  # one pixel in the last row and column
    boxes, has = mask_boxes(masks)
    assert has.tolist() == [m.any() for m in masks.numpy()]
    for box, present, mask in zip(boxes.tolist(), has, masks.numpy()):
        assert box == mask_box(mask) if present else mask_box(mask) is None
    generator = torch.Generator().manual_seed(1)
    jittered = jitter_boxes(boxes[has], (24, 40), generator)
    assert (jittered >= 0).all() and (jittered[:, 0::2] <= 39).all() and (jittered[:, 1::2] <= 23).all()
    assert (jittered - boxes[has]).abs().max() <= 20 and not torch.equal(jittered, boxes[has])
    clicks = inside_clicks(masks[has], generator, count=3)
    assert clicks.shape == (int(has.sum()), 3, 2)
    assert all(mask[int(y), int(x)] for row, mask in zip(clicks.tolist(), masks[has].numpy()) for x, y in row)


def test_negative_clicks_land_next_to_the_object_never_on_it():
    from src_model.train_clip import mask_boxes, outside_clicks

    masks = torch.zeros(3, 40, 60, dtype=torch.bool)
    masks[0, 10:20, 20:30] = True  # a square in the middle: negatives around it
    masks[1, 5:15, 5:15] = True
    masks[1, 8:12, 8:12] = False  # a ring: its hole counts as "next to it" too
    masks[2] = True  # the object fills the frame: no place for a negative click
    generator = torch.Generator().manual_seed(0)
    boxes, _ = mask_boxes(masks)
    for _ in range(20):
        clicks, labels = outside_clicks(masks, generator)
        assert clicks.shape == (3, 1, 2) and labels.tolist() == [[0], [0], [-1]]
        for row in range(2):
            x, y = (int(v) for v in clicks[row, 0].tolist())
            x0, y0, x1, y1 = boxes[row].tolist()
            assert not masks[row, y, x]
            assert x0 - 8 <= x <= x1 + 8 and y0 - 8 <= y <= y1 + 8  # half of a 10 px side is < 8: 8 px


def test_prompt_rows_train_the_box_and_click_embeddings_text_rows_do_not(tiny_model):
    """box_prob=1: every row is a prompt object (anchor on frame 0, then mask + box + τ steps),
    so the prompt encoder's box-corner / click embeddings get gradients; text rows never use them."""
    from src_model.data.synthetic import generate_clip
    from src_model.train_clip import TextCache, clip_forward

    clip = generate_clip(7, num_frames=3, size=(64, 64), num_objects=3)
    ids = [o for o in sorted(clip.objects) if (clip.labels[0] == o).any()]
    masks = torch.stack([torch.from_numpy(clip.labels == o) for o in ids])
    words, word_mask = TextCache(tiny_model.text_encoder)([clip.objects[o]["expressions"][0] for o in ids],
                                                          tiny_model.device)
    corners = tiny_model.sam.prompt_encoder.point_embeddings  # 0/1: negative/positive clicks, 2/3: box corners
    def embeddings_used(box_prob: float, seed: int) -> list[bool]:
        tiny_model.zero_grad()
        for p in corners.parameters():
            p.requires_grad_(True)
        generator = torch.Generator().manual_seed(seed)
        losses, logits = clip_forward(tiny_model, torch.from_numpy(clip.frames)[None], masks, words, word_mask,
                                      0.5, 0.0, generator, clip_of_row=torch.zeros(len(ids), dtype=torch.long),
                                      box_prob=box_prob)
        losses["loss"].backward()
        assert torch.isfinite(losses["loss"]) and logits.shape == masks.shape
        return [e.weight.grad is not None and bool(e.weight.grad.abs().sum() > 0) for e in corners]

    assert embeddings_used(0.0, 0) == [False] * 4
    prompted = [embeddings_used(1.0, seed) for seed in range(10)]  # box, box + clicks or clicks per draw
    assert all(used[1] or used[2] for used in prompted)
    assert any(used[1] for used in prompted) and any(used[2] and used[3] for used in prompted)
    assert any(used[0] for used in prompted)  # a negative click now and then
    tiny_model.zero_grad()


def test_refinement_anchors_get_a_mask_to_correct(tiny_model, monkeypatch):
    """refine_prob: an anchor also gets a mask prompt of what a correction starts from - a near miss,
    another object's mask or nothing - and at 0 it gets none (the old runs' anchors)."""
    from src_model.modeling.refsam import FrameFeatures
    from src_model.train_clip import anchor_decode, masks_to_correct

    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 35:60, 30:50] = True
    kinds = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        start = masks_to_correct(masks, generator)
        if not start.any():
            kinds.add("nothing")
        elif torch.equal(start, masks.roll(1, 0)):
            kinds.add("another object")
        else:
            kinds.add("near miss")
            overlap = (start & masks).flatten(1).sum(1) / masks.flatten(1).sum(1)
            assert bool((overlap > 0.3).any())  # shifted and grown or shrunk by a few pixels, not elsewhere
    assert kinds == {"nothing", "another object", "near miss"}

    seen = []
    decode = tiny_model.decode
    monkeypatch.setattr(tiny_model, "decode", lambda *a, **k: seen.append(k.get("mask_prompt")) or decode(*a, **k))
    frames = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    with torch.no_grad():
        images, input_size, original_size = tiny_model.preprocess(frames)
        embedding, hier = tiny_model.encode_images(images)
        feats = FrameFeatures(embedding.expand(2, -1, -1, -1), hier.expand(2, -1, -1, -1), input_size, original_size)
        for refine_prob in (1.0, 0.0):
            anchor_decode(tiny_model, feats, masks, torch.Generator().manual_seed(1), refine_prob)
    assert seen[0] is not None and seen[0].shape[0] == 2 and seen[1] is None
