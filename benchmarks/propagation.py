"""Propagation benchmark (issue 3): what the feature cache buys, and memory on a long video.

    OMP_NUM_THREADS=1 python benchmarks/propagation.py [--preset tiny] [--model default|PATH]
                                                       [--frames 100] [--device cpu]

One run, one model (random weights of ``--preset``, or trained weights with ``--model``: the
bundled model is the ``tiny`` preset and gives clean masks, where random weights give speckled
ones that cost the session more per frame), one synthetic mp4 (moving shapes):
  (a) first pass: one text object, every frame encoded and decoded (VideoSession.propagate)
  (b) a correction at the middle frame (set_mask), then re-propagation (cache warm: decode only)
  (c) adding a second expression and propagating it (decode only)
  (d) the official release's way for the two expressions: each expression its own loop over the
      video, every frame preprocessed SamPredictor-style (PIL resize, normalise, pad), encoded
      and decoded, no cache
Then, in a fresh process, peak RSS growth while propagating a (1000, 480, 640, 3) np.memmap video
with the labels in a disk memmap. Prints markdown tables; ``--write`` puts them in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HEADING = "## Propagation (issue 3)"


def moving_shapes(t: int, height: int, width: int) -> np.ndarray:
    """Frame ``t``: a disc and a square drifting over a gradient, (H, W, 3) uint8."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack([xx / width * 80 + 40, yy / height * 80 + 40, np.full_like(xx, 60)], -1)
    cy, cx = height * 0.5, width * (0.2 + 0.6 * (t % 100) / 100)
    frame[(yy - cy) ** 2 + (xx - cx) ** 2 < (height * 0.15) ** 2] = (220, 40, 40)
    sy, sx = int(height * 0.2 + t % 30), int(width * 0.7 - t % 50)
    frame[sy:sy + height // 5, sx:sx + height // 5] = (40, 60, 220)
    return frame.astype(np.uint8)


def status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def load_model(args):
    import torch
    from transformers.utils import logging as hf_logging

    from src_model.weights import load_refsam

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    if args.model:
        return load_refsam(args.model, device=args.device)
    return load_refsam(None, preset=args.preset, device=args.device)


def timed(fn):
    """(wall seconds, CPU seconds of this process, minor page faults, fn's result).

    CPU time is what the ratios use: on a shared machine wall time mostly measures the neighbours.
    Page faults show what the allocator costs (see ``accel.tune_cpu_allocator``).
    """
    import resource

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu,
            resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, out)


def release_way(model, video, texts) -> None:
    """(d): per expression, per frame: SamPredictor-style preprocessing, encode, decode; no cache."""
    import torch

    from src_model.modeling.refsam import FrameFeatures
    from src_model.video.source import open_video

    with torch.inference_mode():
        for text in texts:
            prompt = model.encode_text([text])
            track = None
            with open_video(video) as source:
                for _, frame in source.iter_frames():
                    images, input_size, original_size = model.preprocess(frame[None])
                    embedding, hier = model.encode_images(images)
                    out = model.decode(FrameFeatures(embedding, hier, input_size, original_size),
                                       text=prompt, track=track)
                    track = out.track
                    _ = model.postprocess(out.low_res_logits, input_size, original_size)[0] > 0


def speed(args) -> dict:
    from src_model.video.session import VideoSession
    from src_model.video.source import write_video

    model = load_model(args)
    tmp = Path(tempfile.mkdtemp(prefix="refsam-bench-"))
    video = write_video(tmp / "shapes.mp4", (moving_shapes(t, args.height, args.width) for t in range(args.frames)),
                        fps=25)
    texts = ["the red disc moving to the right", "the blue square"]
    session = VideoSession(model, video)
    a = session.add_object(text=texts[0])
    t_a = timed(lambda: list(session.propagate()))
    mid = args.frames // 2
    mask = np.zeros((args.height, args.width), bool)
    mask[args.height // 3: 2 * args.height // 3, args.width // 3: 2 * args.width // 3] = True

    def correction():
        session.set_mask(a, mid, mask)
        return list(session.propagate(start=mid))

    *t_b, frames_b = timed(correction)

    def second():
        b = session.add_object(text=texts[1])
        return list(session.propagate(obj_ids=[b]))

    t_c = timed(second)
    encoded = session.cache.frames_encoded
    session.close()
    t_d = timed(lambda: release_way(model, video, texts))
    return {"frames": args.frames, "size": f"{args.width}x{args.height}", "b_frames": len(frames_b),
            "encoded": encoded, "load": os.getloadavg()[0],
            **{k: {"wall": v[0], "cpu": v[1], "faults": v[2]} for k, v in zip("abcd", (t_a, t_b, t_c, t_d))}}


def long_video(args) -> dict:
    """Propagate a (N, 480, 640, 3) memmapped video; peak RSS growth (run in a fresh process)."""
    from src_model.video.session import VideoSession

    model = load_model(args)
    tmp = Path(tempfile.mkdtemp(prefix="refsam-long-"))
    shape = (args.long_frames, 480, 640, 3)
    frames = np.lib.format.open_memmap(tmp / "video.npy", mode="w+", dtype=np.uint8, shape=shape)
    for t in range(shape[0]):
        frames[t] = moving_shapes(t, 480, 640)
    frames.flush()
    del frames
    video = np.load(tmp / "video.npy", mmap_mode="r")
    session = VideoSession(model, video, labels_path=tmp / "labels.npy", max_cache_bytes=args.cache_mib << 20)
    session.add_object(text="the red disc")
    rss0, anon0 = status_kib("VmRSS"), status_kib("RssAnon")
    samples, peak_anon = [], anon0
    start = time.perf_counter()
    for i, (t, _) in enumerate(session.propagate()):
        peak_anon = max(peak_anon, status_kib("RssAnon"))
        if (i + 1) % max(1, shape[0] // 4) == 0:
            samples.append((i + 1, round(status_kib("RssAnon") / 1024)))
    seconds = time.perf_counter() - start
    result = {"shape": list(shape), "seconds": seconds, "rss_before_mib": rss0 / 1024,
              "hwm_growth_mib": (status_kib("VmHWM") - rss0) / 1024, "anon_before_mib": anon0 / 1024,
              "anon_growth_mib": (peak_anon - anon0) / 1024, "anon_samples_mib": samples,
              "labels_on_disk": isinstance(session.labels, np.memmap), "cache_mib": args.cache_mib,
              "encoded": session.cache.frames_encoded}
    session.close()
    return result


def table(speed_result: dict | None, long_result: dict | None, args) -> str:
    lines = []
    if speed_result:
        r = speed_result
        n, nb = r["frames"], r["b_frames"]
        rows = [("a", "(a) first pass: encode + decode, 1 expression", n),
                ("b", f"(b) correction at frame {n // 2} + re-propagation ({nb} frames)", nb),
                ("c", "(c) second expression (decode only)", n),
                ("d", "(d) release's way, 2 expressions, no cache", 2 * n)]
        cpu = {k: r[k]["cpu"] for k in "abcd"}
        lines += [
            f"{n} frames {r['size']}, {model_name(args)}, device `{args.device}`, {args.threads} thread(s), "
            f"malloc {args.malloc}, "
            f"load average {r['load']:.1f} at the end; frames encoded over (a)+(b)+(c): {r['encoded']}",
            "",
            "| step | CPU s | CPU ms / frame | wall s | page faults / frame |",
            "|---|---:|---:|---:|---:|",
            *(f"| {label} | {r[k]['cpu']:.2f} | {1000 * r[k]['cpu'] / frames:.1f} | {r[k]['wall']:.2f} | "
              f"{r[k]['faults'] / frames:,.0f} |" for k, label, frames in rows),
            "",
            f"- (a)/(b) = **{cpu['a'] / cpu['b']:.1f}x** CPU ({r['a']['wall'] / r['b']['wall']:.1f}x wall): "
            "re-propagation after a correction vs the first pass",
            f"- (d) / ((a)+(c)) = **{cpu['d'] / (cpu['a'] + cpu['c']):.2f}x** CPU "
            f"({r['d']['wall'] / (r['a']['wall'] + r['c']['wall']):.2f}x wall): two expressions, release's way vs "
            "the cache",
        ]
    if long_result:
        r = long_result
        lines += [
            "",
            f"Long video: np.memmap {tuple(r['shape'])} uint8, labels in a disk memmap "
            f"({r['labels_on_disk']}), feature cache budget {r['cache_mib']} MiB, one text object, "
            f"{r['seconds']:.0f} s:",
            "",
            "| measure | MiB |",
            "|---|---:|",
            f"| RSS after model load + session set-up | {r['rss_before_mib']:.0f} |",
            f"| peak RSS growth while propagating (VmHWM - RSS before) | {r['hwm_growth_mib']:.0f} |",
            f"| peak growth of anonymous memory (RssAnon; excludes file pages of the video memmap) "
            f"| {r['anon_growth_mib']:.0f} |",
            "",
            "RssAnon (MiB) after n frames: " + ", ".join(f"{n}: {m}" for n, m in r["anon_samples_mib"]),
        ]
    return "\n".join(lines)


def model_name(args) -> str:
    if args.model:
        return f"model `{args.model}` (trained weights)"
    return f"preset `{args.preset}` (random weights)"


def write_section(text: str, command: str) -> None:
    """Put this run's results into our section of BENCHMARKS.md (one block per command)."""
    path = ROOT / "BENCHMARKS.md"
    body = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"### `{command}`\n\n{text}\n"
    if HEADING not in body:
        body = body.rstrip("\n") + f"\n\n{HEADING}\n\n{block}"
    else:
        start = body.index(HEADING) + len(HEADING)
        end = body.find("\n## ", start)
        end = len(body) if end < 0 else end + 1
        section = body[start:end]
        blocks = section.split("\n### ")
        head, blocks = blocks[0], ["### " + b for b in blocks[1:]]
        mine = [k for k, b in enumerate(blocks) if b.startswith(f"### `{command}`")]
        if mine:
            blocks[mine[0]] = block  # same command: replaced where it stands
        else:
            blocks.append(block)
        section = head.rstrip("\n") + "\n\n" + "\n".join(b.rstrip("\n") + "\n" for b in blocks)
        body = body[:body.index(HEADING) + len(HEADING)] + section + ("\n" + body[end:] if end < len(body) else "")
    path.write_text(body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--model", default=None,
                        help="trained weights ('default' = the bundled tiny model, or a path); "
                             "default: random weights of --preset")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--long-frames", type=int, default=1000, help="0: skip the long-video measurement")
    parser.add_argument("--cache-mib", type=int, default=256, help="feature cache budget for the long video")
    parser.add_argument("--write", action="store_true", help="replace our section of BENCHMARKS.md")
    parser.add_argument("--long-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                        help="tuned: accel.tune_cpu_allocator(), as the refsam command and the plugin do")
    args = parser.parse_args(argv)
    import torch
    if args.malloc == "tuned":
        from src_model.accel import tune_cpu_allocator

        tune_cpu_allocator()

    torch.set_num_threads(args.threads)
    if args.long_only:
        print(json.dumps(long_video(args)))
        return 0
    speed_result = speed(args)
    print(table(speed_result, None, args), flush=True)
    long_result = None
    if args.long_frames:
        child = subprocess.run([sys.executable, __file__, "--long-only", *(argv or sys.argv[1:])],
                               capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if child.returncode != 0:
            print(child.stderr[-2000:], file=sys.stderr)
            return 1
        long_result = json.loads(child.stdout.strip().splitlines()[-1])
        print(table(None, long_result, args))
    if args.write:
        command = "OMP_NUM_THREADS=1 python benchmarks/propagation.py " + " ".join(argv or sys.argv[1:])
        write_section(table(speed_result, long_result, args), command.replace(" --write", "").strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
