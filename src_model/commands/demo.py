"""``refsam demo``: the sample video segmented from its expressions with the bundled model.

Downloads nothing. With a display: napari with the sample video, the RefSAM widget and the
default model, segmenting each sample expression in turn. ``--headless`` (automatic without a
display or without napari/Qt): writes the labels as TIFF and an overlay video, and prints J&F
against the clip's ground truth.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HELP = "segment the sample video from its expressions with the default model (napari, or --headless files)"


def add_arguments(parser) -> None:
    parser.add_argument("--headless", action="store_true",
                        help="no viewer: write labels.tif and overlay.mp4 to --out and print J&F")
    parser.add_argument("--model", default="default", help="'default' (bundled) or a .safetensors path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help=f"output folder of --headless (default: {DEFAULT_OUT}; there an earlier demo's "
                             f"{' and '.join(DEMO_FILES)} are replaced while the folder holds nothing else)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {' and '.join(DEMO_FILES)} already in --out")


DEFAULT_OUT = "refsam_demo"
DEMO_FILES = ("labels.tif", "overlay.mp4")  # what --headless writes into --out


def check_out(out: str | None, overwrite: bool) -> Path:
    """The --headless output folder, refused before the model loads when the demo must not write there.

    A second ``refsam demo`` (the README's quick start) replaces the first one's files in the default
    folder, as long as it holds only those: anything else there may be the user's, so it takes --overwrite.
    """
    from ..atomic import OutputExistsError, check_replaceable_dir

    folder = Path(DEFAULT_OUT if out is None else out)
    first = next(p for p in (folder, *folder.absolute().parents) if p.exists() or p.is_symlink())
    if not first.is_dir():
        raise ValueError(f"--out {folder}: {first} is a file; name a folder for {' and '.join(DEMO_FILES)}")
    existing = [folder / name for name in DEMO_FILES if (folder / name).exists() or (folder / name).is_symlink()]
    for path in existing:
        if path.is_dir():  # said first: --overwrite would not help
            raise OutputExistsError(f"{path} is a folder; not replacing it: choose another --out")
    if existing and not overwrite:
        if out is None:
            try:
                check_replaceable_dir(folder, DEMO_FILES.__contains__)
                return folder  # only an earlier demo's output
            except OutputExistsError:
                pass
        raise OutputExistsError(f"{existing[0]} already exists; pass --overwrite to replace it, or choose another --out")
    return folder


def sample_clip():
    """The plugin's sample clip ("Synthetic referring video") with its ground truth."""
    from napari_refsam._sample_data import SAMPLE_FRAMES, SAMPLE_SEED, SAMPLE_SIZE

    from ..data.synthetic import generate_clip

    return generate_clip(SAMPLE_SEED, num_frames=SAMPLE_FRAMES, size=SAMPLE_SIZE)


def sample_expressions(clip) -> dict[int, str]:
    """One expression per object of the clip (its first): {ground-truth id: text}."""
    return {obj: info["expressions"][0] for obj, info in clip.objects.items()}


def overlay(frames, labels, alpha: float = 0.5):
    """Frames (T, H, W, 3) uint8 blended with the DAVIS colour of each label id -> (T, H, W, 3) uint8."""
    import numpy as np

    from ..data.ytvos import davis_palette

    palette = davis_palette().astype(np.float32)
    colours = palette[np.asarray(labels) % 256]
    inside = (np.asarray(labels) > 0)[..., None]
    blended = np.where(inside, (1 - alpha) * frames + alpha * colours, frames)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def has_display() -> bool:
    """A GUI can open: a display (X11/Wayland, or not Linux) and napari with a Qt binding importable."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        import importlib

        importlib.import_module("napari")
        importlib.import_module("qtpy.QtWidgets")  # raises without a Qt binding
    except Exception:  # noqa: BLE001 - any failure to import a GUI stack means: no GUI
        return False
    return True


def run_headless(model, out: Path) -> dict:
    """Segment every sample expression in one session; write the files; return the scores."""
    import numpy as np

    from ..atomic import atomic_path
    from ..export.tiff import write_tiff
    from ..metrics import evaluate_video, summarize
    from ..video.session import VideoSession
    from ..video.source import write_video

    clip = sample_clip()
    texts = sample_expressions(clip)
    out.mkdir(parents=True, exist_ok=True)
    with VideoSession(model, clip.frames) as session:
        ids = {gt: session.add_object(text=text) for gt, text in texts.items()}
        for _ in session.propagate():
            pass
        labels = np.array(session.labels)
    # Session ids follow the order objects were added; give each the id of its ground-truth object.
    pred = np.zeros_like(clip.labels)
    for gt, obj in ids.items():
        pred[labels == obj] = gt
    scores = evaluate_video(pred, clip.labels, obj_ids=sorted(texts))
    # Replacing is allowed here: check_out() refused what must not be replaced before the model loaded.
    write_tiff(out / "labels.tif", pred, {gt: [t] for gt, t in texts.items()}, overwrite=True,
               video_name=clip.name)
    with atomic_path(out / "overlay.mp4") as tmp:  # never half a video, never written through a link
        write_video(tmp, overlay(clip.frames, pred), fps=8)
    return {"texts": texts, "scores": scores, "summary": summarize(scores)}


def run(args) -> int:
    from ..weights import load_refsam

    headless = args.headless or not has_display()
    if not args.headless and headless:
        print("refsam demo: no display (or no napari/Qt); running --headless", file=sys.stderr)
    out = check_out(args.out, args.overwrite) if headless else None  # before the model loads
    start = time.time()
    model = load_refsam(args.model, device=args.device)
    if not headless:
        # The viewer part lives in the plugin package: src_model itself never imports Qt/napari.
        from napari_refsam._demo import run_gui

        return run_gui(model)
    result = run_headless(model, out)
    for gt, text in result["texts"].items():
        s = result["scores"][gt]
        print(f"object {gt}: {text!r:<48} J {s['J']:.3f}  F {s['F']:.3f}  J&F {s['J&F']:.3f}")
    s = result["summary"]
    print(f"mean over {len(result['texts'])} objects: J {s['J']:.3f}  F {s['F']:.3f}  J&F {s['J&F']:.3f}")
    print(f"wrote {out / 'labels.tif'} and {out / 'overlay.mp4'} in {time.time() - start:.1f} s")
    return 0
