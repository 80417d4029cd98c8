"""Reading a video backward: decoded frames and seconds, forward vs backward, mp4 and GIF.

    OMP_NUM_THREADS=1 python benchmarks/backward_read.py [--frames 240] [--size 96x128] [--budget-mib 128]

A propagation from a late prompt towards the start reads the frames the feature cache lacks in
descending order. Codecs decode forward only, so without the readers' RecentFrames every such
read decodes again from the previous keyframe (a GIF: from frame 0). The mp4 is written with a
single keyframe (x264 -g above the frame count), the worst case; counts are frames the decoder
produced. --budget-mib 0 shows the behaviour without RecentFrames.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_inputs(folder: Path, frames: np.ndarray) -> tuple[Path, Path]:
    from PIL import Image

    from src_model.video.source import write_video

    mp4 = write_video(folder / "one_gop.mp4", frames, fps=25, keyframe_interval=len(frames) + 10)
    gif = folder / "clip.gif"
    images = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE) for f in frames]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=40)
    return mp4, gif


def timed_reads(path: Path, order: list[int], budget: int) -> tuple[float, int | None]:
    from src_model.video.source import open_video

    with open_video(path, prefetch=0) as src:
        reader = src._reader
        reader._recent.budget = budget
        reader.frames_decoded = 0  # not the first frame decoded at open (its display matrix)
        start = time.perf_counter()
        for i in order:
            src[i]
        seconds = time.perf_counter() - start
        return seconds, (reader.frames_decoded if hasattr(reader, "_decode") else None)  # PyAV counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--size", default="96x128", help="HxW")
    parser.add_argument("--budget-mib", type=float, default=128)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (args.frames, h, w, 3), dtype=np.uint8)
    budget = int(args.budget_mib * (1 << 20))
    with tempfile.TemporaryDirectory() as tmp:
        mp4, gif = write_inputs(Path(tmp), frames)
        print(f"{args.frames} frames {h}x{w}, RecentFrames budget {args.budget_mib:g} MiB\n")
        print("| video | order | seconds | frames decoded |")
        print("|---|---|---:|---:|")
        for path, kind in ((mp4, "mp4, one keyframe"), (gif, "GIF")):
            for name, order in (("forward", list(range(args.frames))),
                                ("backward", list(reversed(range(args.frames))))):
                seconds, decoded = timed_reads(path, order, budget)
                print(f"| {kind} | {name} | {seconds:.2f} | {'' if decoded is None else f'{decoded:,}'} |")


if __name__ == "__main__":
    main()
