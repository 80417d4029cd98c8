"""Speed benchmark (issue 7): FPS and peak memory per stage and end to end, ours vs the reference.

    OMP_NUM_THREADS=2 python benchmarks/speed.py --presets tiny,vit_b --frames 8
        [--device auto|cpu|cuda] [--batch N] [--compile [MODE]] [--image-size 512]
        [--bf16 auto|on|off] [--device-preprocess] [--objects K] [--markdown out.md] [--json out.json]

Random weights (speed does not depend on them) and the real MiniLM text encoder; one synthetic
mp4 of moving shapes (--height x --width). Both paths run in the same process, on the same model:

  reference  the official release's way: per frame and per expression, fp32, eager,
             segment_anything's attention, batch 1, native encoder size: read the frame,
             SamPredictor-style preprocessing (PIL), encode, decode, upsample, write labels.
             No cache, no batching, no threads (each expression is encoded once).
  ours       fast attention, bf16 autocast (default on CUDA; --bf16 on for a bf16 CPU), batched
             encoding (--batch), optional --compile / --image-size / --device-preprocess, all
             objects of a frame in one decode batch:
             stages    each stage timed on its own (synchronised), features kept in memory;
             end to end  VideoSession.propagate over the whole video (prefetch thread, cache);
             re-propagation  a correction at the middle frame, then VideoSession.propagate from
                          it: features are cached, so only the decoder runs;
             cached decode   decode + upsample + write labels from precomputed features.

FPS is per video frame; with --repeat R each row is the best of R interleaved runs (shared
machines). Peak memory: CUDA max allocated during the stage (weights included), or
on CPU the process RSS sampled every 2 ms during the stage.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("decode video", "preprocess", "encode", "text", "mask decode", "upsample", "write labels")
EXPRESSIONS = ("the red disc moving right", "the blue square", "the background gradient", "the left object")


# ----------------------------------------------------------------- inputs
def shapes_frame(t: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: a red disc and a blue square moving over a gradient (frame ``t``)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack([30 + 90 * xx / width, 30 + 90 * yy / height, np.full_like(xx, 70)], axis=-1)
    radius = 0.12 * height
    cx, cy = width * (0.15 + 0.7 * ((t * 7) % 100) / 100), height * 0.45
    frame[(xx - cx) ** 2 + (yy - cy) ** 2 < radius ** 2] = (210, 40, 50)
    side = height // 6
    top, left = int(height * 0.6), int(width * 0.6 - (t * 5) % (width // 3))
    frame[top:top + side, left:left + side] = (40, 70, 210)
    return frame.astype(np.uint8)


def make_video(folder: Path, frames: int, height: int, width: int) -> Path:
    from src_model.video.source import write_video

    return write_video(folder / "shapes.mp4", (shapes_frame(t, height, width) for t in range(frames)), fps=10)


# ----------------------------------------------------------------- measuring
class RssSampler:
    """Peak resident memory of this process between start() and stop() (CPU)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def start(self) -> None:
        self.peak = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.rss())


class NoStats:
    """Stands in for Stats where only an outer measurement is wanted (no syncs, no sampling)."""

    @contextlib.contextmanager
    def __call__(self, name: str, frames: int = 1):
        yield


class Stats:
    """Accumulates seconds, video frames and peak memory per named stage (not nestable)."""

    def __init__(self, device) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.frames: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.sampler = None if self.cuda else RssSampler()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, name: str, frames: int = 1):
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.sampler.start()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] += time.perf_counter() - start
            self.frames[name] += frames
            peak = self.torch.cuda.max_memory_allocated(self.device) if self.cuda else self.sampler.stop()
            self.peak[name] = max(self.peak[name], peak)

    def row(self, name: str) -> dict:
        seconds, frames = self.seconds.get(name), self.frames.get(name, 0)
        if seconds is None:
            return {}
        return {"ms": 1000 * seconds / max(frames, 1), "fps": frames / seconds if frames and seconds else None,
                "seconds": seconds, "frames": frames, "peak_mib": self.peak[name] / 2**20}


# ----------------------------------------------------------------- the two paths
def labels_from_logits(logits, threshold: float):
    """(K, H, W) logits of K objects -> (H, W) ids on the host: highest logit wins, 0 = none.

    The only device-to-host transfer of the frame (the labels are handed out)."""
    import torch

    if logits.shape[0] == 1:
        return (logits[0] > threshold).to(torch.uint8).cpu().numpy()
    best, index = logits.max(dim=0)
    ids = torch.where(best > threshold, index + 1, torch.zeros_like(index)).to(torch.int16)
    return ids.cpu().numpy()


def run_reference(model, video: Path, texts, stats: Stats) -> np.ndarray:
    """The official-release way (see the module docstring); returns the (T, H, W) labels."""
    import torch

    from src_model.modeling.refsam import FrameFeatures
    from src_model.video.source import open_video

    source = open_video(video, prefetch=0)
    labels = np.zeros((len(source), source.height, source.width), np.uint16)
    threshold = model.config.mask_threshold
    with model.reference_path(), torch.inference_mode():
        prompts = []
        for text in texts:
            with stats("text", 0):
                prompts.append(model.encode_text([text]))
        tracks = [None] * len(texts)
        for t in range(len(source)):
            with stats("decode video"):
                frame = source[t]
            for k, prompt in enumerate(prompts):  # one expression at a time: the frame is re-encoded
                count = int(k == 0)
                with stats("preprocess", count):
                    images, input_size, original_size = model.preprocess(frame[None])
                with stats("encode", count):
                    features = FrameFeatures(*model.encode_images(images), input_size, original_size)
                with stats("mask decode", count):
                    out = model.decode(features, text=prompt, track=tracks[k])
                    tracks[k] = out.track
                with stats("upsample", count):
                    logits = model.postprocess(out.low_res_logits, input_size, original_size)
                with stats("write labels", count):
                    mask = (logits[0] > threshold).cpu().numpy()
                    labels[t][mask] = k + 1
    source.close()
    return labels


def run_ours_stages(model, video: Path, texts, batch: int, stats: Stats):
    """Ours, one stage at a time (synchronised), features kept. Returns (labels, features)."""
    import torch

    from src_model.modeling.refsam import FrameFeatures
    from src_model.video.source import open_video

    source = open_video(video)  # background decode thread
    count = len(source)
    frames_iter = source.iter_frames()
    features = []
    with torch.inference_mode():
        for start in range(0, count, batch):
            n = min(batch, count - start)
            with stats("decode video", n):
                frames = np.stack([next(frames_iter)[1] for _ in range(n)])
            with stats("preprocess", n):
                images, input_size, original_size = model.preprocess(frames)
            with stats("encode", n):
                embedding, hier = model.encode_images(images)
            features.extend(FrameFeatures(embedding[i:i + 1], hier[i:i + 1], input_size, original_size)
                            for i in range(n))
        frames_iter.close()
        with stats("text", 0):
            prompt = model.encode_text(list(texts))  # all expressions in one batch
        labels = decode_all(model, features, prompt, stats)
    source.close()
    return labels, features


def decode_all(model, features, prompt, stats: Stats) -> np.ndarray:
    """Decode every frame for all objects at once (one batch), upsample, write the labels."""
    first = features[0]
    labels = np.zeros((len(features), *first.original_size), np.uint16)
    track = None
    threshold = model.config.mask_threshold
    for t, feats in enumerate(features):
        with stats("mask decode"):
            out = model.decode(feats, text=prompt, track=track)
            track = out.track
        with stats("upsample"):
            logits = model.postprocess(out.low_res_logits, feats.input_size, feats.original_size)
        with stats("write labels"):
            labels[t] = labels_from_logits(logits, threshold)
    return labels


def run_ours_session(model, video: Path, texts, batch: int, stats: Stats) -> None:
    """End to end and re-propagation through VideoSession (the engine the plugin and CLI use)."""
    from src_model.video.session import VideoSession

    with VideoSession(model, video, batch_size=batch) as session:
        ids = [session.add_object(text=text) for text in texts]
        frames = 0
        with stats("end to end", 0):
            for _ in session.propagate():
                frames += 1
        stats.frames["end to end"] = frames
        height, width = session.frame_shape
        middle = session.num_frames // 2
        mask = np.zeros((height, width), bool)
        mask[height // 4: height // 2, width // 4: width // 2] = True
        session.set_mask(ids[0], middle, mask)
        frames = 0
        with stats("re-propagation", 0):
            for _ in session.propagate(start=middle):
                frames += 1
        stats.frames["re-propagation"] = frames


# ----------------------------------------------------------------- one preset
def bench_preset(preset: str, args, video: Path, device, text_encoder) -> dict:
    import torch

    from src_model.weights import load_refsam

    torch.manual_seed(0)
    model = load_refsam(None, preset=preset, text_encoder=text_encoder, device=device, image_size=args.image_size)
    bf16 = {"auto": device.type == "cuda", "on": True, "off": False}[args.bf16]
    model.enable_bf16(bf16)
    model.enable_device_preprocess(args.device_preprocess)
    batch = args.batch or (8 if device.type == "cuda" else 1)
    texts = EXPRESSIONS[: args.objects]
    info = {"preset": preset, "batch": batch, "native_size": model.native_config.sam.image_size}
    if args.compile:
        start = time.perf_counter()
        info["compiled"] = model.compile_encoder(None if args.compile == "default" else args.compile,
                                                 warmup_batch=batch)
        info["compile_seconds"] = time.perf_counter() - start
    info["options"] = model.speed_options()
    size = model.config.sam.image_size

    def warm(reference: bool) -> None:
        # First calls pay for kernel selection / oneDNN primitives / CUDA context: not per-frame cost.
        from src_model.modeling.refsam import FrameFeatures

        context = model.reference_path() if reference else contextlib.nullcontext()
        with context, torch.inference_mode():
            s = model.config.sam.image_size
            for _ in range(args.warmup):
                embedding, hier = model.encode_images(torch.zeros(1 if reference else batch, 3, s, s, device=device))
                feats = FrameFeatures(embedding[:1], hier[:1], (s, s), (args.height, args.width))
                out = model.decode(feats, text=model.encode_text(list(texts[:1] if reference else texts)))
                model.postprocess(out.low_res_logits, (s, s), (args.height, args.width))

    rows = (*STAGES, "end to end", "re-propagation", "cached decode")
    runs: dict[str, list[Stats]] = {"reference": [], "ours": []}
    for repeat in range(args.repeat):  # interleaved, so both paths see the same machine load
        if not args.no_reference:
            ref = Stats(device)
            if repeat == 0:
                warm(True)
            start = time.perf_counter()
            run_reference(model, video, texts, ref)
            ref.seconds["end to end"] = time.perf_counter() - start  # includes its per-stage syncs
            ref.frames["end to end"] = args.frames
            ref.peak["end to end"] = max(ref.peak.values())
            runs["reference"].append(ref)
        ours = Stats(device)
        if repeat == 0:
            warm(False)
        _, features = run_ours_stages(model, video, texts, batch, ours)
        with torch.inference_mode():
            prompt = model.encode_text(list(texts))
            with ours("cached decode", len(features)):
                decode_all(model, features, prompt, NoStats())
        del features
        run_ours_session(model, video, texts, batch, ours)
        runs["ours"].append(ours)
    info["image_size"] = size
    # Best of the repeats per row: on a shared machine the minimum is the least disturbed run.
    info["stages"] = {
        name: {row: min((r.row(row) for r in stats), key=lambda x: x.get("ms", float("inf"))) for row in rows}
        for name, stats in runs.items() if stats
    }
    return info


# ----------------------------------------------------------------- output
def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def command_line() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ)
    return (env + " " if env else "") + "python benchmarks/speed.py " + shlex.join(sys.argv[1:])


def fmt(value, digits=1) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}" if value >= 1 else f"{value:.3g}"


def markdown(results: list[dict], args, device) -> str:
    import torch

    lines = [
        f"Device: {device_name(device)}; torch {torch.__version__}; Python {platform.python_version()}; "
        f"{args.frames} frames {args.width}x{args.height}, {args.objects} object(s), malloc {args.malloc}.",
        "",
        f"Command: `{command_line()}`",
        "",
        "| preset | encoder px | batch | options | reference FPS | ours FPS (end to end) | ratio | "
        "re-propagation FPS (cached) | cached decode FPS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for info in results:
        ref = info["stages"].get("reference", {}).get("end to end", {})
        ours = info["stages"]["ours"]
        opts = info["options"]
        flags = ", ".join(k for k in ("fast_attention", "bf16", "compiled", "device_preprocess") if opts.get(k))
        ratio = (ours["end to end"]["fps"] / ref["fps"]) if ref.get("fps") and ours["end to end"].get("fps") else None
        lines.append(
            f"| {info['preset']} | {info['image_size']} (native {info['native_size']}) | {info['batch']} | {flags} | "
            f"{fmt(ref.get('fps'), 2)} | {fmt(ours['end to end'].get('fps'), 2)} | "
            f"{'–' if ratio is None else f'{ratio:.2f}x'} | {fmt(ours['re-propagation'].get('fps'))} | "
            f"{fmt(ours['cached decode'].get('fps'))} |"
        )
    for info in results:
        lines += ["", f"{info['preset']} per stage (ms per video frame / FPS / peak MiB):", "",
                  "| stage | reference ms | reference FPS | reference peak | ours ms | ours FPS | ours peak | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        ref_stages = info["stages"].get("reference", {})
        for name in (*STAGES, "end to end", "re-propagation", "cached decode"):
            r, o = ref_stages.get(name, {}), info["stages"]["ours"].get(name, {})
            if name == "text":  # once per expression, not per frame
                cells = [f"{fmt(r.get('seconds', 0) * 1000)} ms total" if r else "–", "–",
                         fmt(r.get("peak_mib")) if r else "–",
                         f"{fmt(o.get('seconds', 0) * 1000)} ms total" if o else "–", "–",
                         fmt(o.get("peak_mib")), "–"]
            else:
                ratio = r["ms"] / o["ms"] if r.get("ms") and o.get("ms") else None
                cells = [fmt(r.get("ms")) if r else "–", fmt(r.get("fps"), 2) if r else "–",
                         fmt(r.get("peak_mib")) if r else "–", fmt(o.get("ms")) if o else "–",
                         fmt(o.get("fps"), 2) if o else "–", fmt(o.get("peak_mib")) if o else "–",
                         "–" if ratio is None else f"{ratio:.2f}x"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if "compile_seconds" in info:
            state = "ok" if info["compiled"] else "FAILED (eager)"
            lines.append(f"\ncompile: {state} in {info['compile_seconds']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny", help="comma-separated: tiny,vit_b,vit_l,vit_h")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--objects", type=int, default=1, choices=range(1, len(EXPRESSIONS) + 1))
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    parser.add_argument("--batch", type=int, default=None, help="frames per encoder call (default: 8 CUDA, 1 CPU)")
    parser.add_argument("--compile", nargs="?", const="default", default=None,
                        help="torch.compile the encoder; optional value: the mode (e.g. max-autotune-no-cudagraphs)")
    parser.add_argument("--image-size", type=int, default=None, help="encoder input size for ours (e.g. 512)")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="bf16 autocast for ours (auto: on CUDA only)")
    parser.add_argument("--device-preprocess", action="store_true",
                        help="resize on the device (not bit-identical with PIL)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed encoder calls per path first")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run both paths this many times (interleaved) and report the best per row")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference path")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--json", type=Path, help="also write the raw numbers to this file")
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                        help="tuned: accel.tune_cpu_allocator(), as the refsam command and the plugin do")
    args = parser.parse_args(argv)

    import torch
    if args.malloc == "tuned":
        from src_model.accel import tune_cpu_allocator

        tune_cpu_allocator()
    from transformers.utils import logging as hf_logging

    from src_model.text import TextEncoder
    from src_model.weights import resolve_device

    hf_logging.disable_progress_bar()
    device = resolve_device(args.device)
    text_encoder = TextEncoder()  # shared by the presets; load_refsam moves it to the device
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp), args.frames, args.height, args.width)
        for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
            print(f"[speed] {preset} on {device} ...", file=sys.stderr, flush=True)
            results.append(bench_preset(preset, args, video, device, text_encoder))
            gc.collect()  # drop this preset's model before the next one is built
            if device.type == "cuda":
                torch.cuda.empty_cache()
    text = markdown(results, args, device)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.json:
        payload = {"command": command_line(), "device": device_name(device), "torch": torch.__version__,
                   "results": results}
        args.json.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
