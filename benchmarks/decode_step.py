"""What one re-propagation step costs on the CPU, and two ways tried to make it cheaper (issue 3).

    OMP_NUM_THREADS=1 python benchmarks/decode_step.py [--model default] [--steps 100] [--compile]

A re-propagation step is, per frame: the mask prompt from the previous mask, one decode with the
cached text-conditioned features (``RefSAM.decode`` with ``conditioned=`` / ``first_layer=``), and
the upscaling of the logits to the frame. This times that step alone (no session) at batch 1, at
batch 2 (two frames in one call: what decoding the forward and the backward pass of a
re-propagation together would do), and with ``--compile`` under ``torch.compile`` (inductor's CPU
code). Prints one markdown table; CPU time per frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def step_timer(model, batch: int, compiled: bool):
    """A function running ``steps`` re-propagation steps of ``batch`` frames; returns CPU s."""
    import torch

    from src_model.modeling.refsam import FrameFeatures
    from src_model.video.objects import stack_text

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (batch, 240, 320, 3), dtype=np.uint8)
    with torch.inference_mode():
        images, input_size, original_size = model.preprocess(frames)
        embedding, hier = model.encode_images(images)
        features = FrameFeatures(embedding, hier, input_size, original_size)
        text = stack_text([model.encode_text(["the red disc moving to the right"])] * batch)
        conditioned = model.text_conditioned(features, text, batch)
        first_layer = model.first_layer_inputs(conditioned)
    track = torch.randn(batch, model.config.sam.prompt_embed_dim)
    masks = torch.from_numpy(rng.random((batch, 240, 320)) > 0.5)

    def step():
        prompt = model.mask_to_prompt(masks, input_size)
        out = model.decode(features, text=text, track=track, mask_prompt=prompt, conditioned=conditioned,
                           first_layer=first_layer)
        return model.postprocess(out.low_res_logits, input_size, original_size)

    if compiled:
        step = torch.compile(step, dynamic=False)

    def run(steps: int) -> float:
        with torch.inference_mode():
            for _ in range(10):  # warm-up (and compilation)
                step()
            start = time.process_time()
            for _ in range(steps):
                step()
            return time.process_time() - start

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default', a .safetensors path, or 'none' (random tiny)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from src_model.weights import load_refsam

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = load_refsam(None if args.model == "none" else args.model, preset="tiny" if args.model == "none" else None,
                        device="cpu")
    rows = []
    for batch, compiled in [(1, False), (2, False)] + ([(1, True)] if args.compile else []):
        seconds = step_timer(model, batch, compiled)(args.steps)
        rows.append((batch, compiled, 1000 * seconds / (args.steps * batch)))
    print(f"model `{args.model}`, 320x240 frames, {torch.get_num_threads()} thread(s), {args.steps} steps\n")
    print("| batch (frames per call) | torch.compile | CPU ms / frame |")
    print("|---:|---|---:|")
    for batch, compiled, ms in rows:
        print(f"| {batch} | {'yes' if compiled else 'no'} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
