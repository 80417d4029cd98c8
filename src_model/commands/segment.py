"""``refsam segment``: label objects through a whole video from expressions (and boxes, clicks), headless."""
from __future__ import annotations

from pathlib import Path

from ..export._common import refuse_replacing_the_video

HELP = "segment the objects described by --text (or --box, --click) through a video and export the labels"


def add_arguments(parser) -> None:
    parser.add_argument("video", help="video file (mp4/avi/mov/mkv/webm/gif), TIFF stack or folder of frames")
    parser.add_argument("--text", action="append", default=[], metavar="T",
                        help="referring expression; repeat for more objects (object i = label i, in order)")
    parser.add_argument("--box", action="append", default=[], nargs=5, metavar=("FRAME", "X0", "Y0", "X1", "Y1"),
                        help="a SAM box prompt on FRAME (pixels); repeat for more objects (labels after the texts)")
    parser.add_argument("--click", action="append", default=[], nargs="+", metavar="FRAME X,Y[,L]",
                        help="one object from clicks on FRAME: X,Y on the object, X,Y,0 on what is not it "
                             "(at least one on it), e.g. --click 3 120,80 150,90,0; repeat for more objects "
                             "(labels after the boxes)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="labels file: .tif/.tiff (stack), .json (COCO), or a folder/ (palette PNGs)")
    parser.add_argument("--dataset", metavar="DIR",
                        help="also add the video, labels and expressions to a Ref-YouTube-VOS style dataset")
    parser.add_argument("--name", default=None,
                        help="the video's name in --dataset and in the exports (default: the file or folder name)")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled), a RefSAM .safetensors path, or 'none': a fresh model (random weights; "
                             "plain SAM with --sam-checkpoint, which then takes --box objects only)")
    parser.add_argument("--preset", default=None, help="model preset for --model none (vit_b, vit_l, vit_h, tiny)")
    parser.add_argument("--sam-checkpoint", default=None, metavar="P", help="official SAM .pth checkpoint")
    parser.add_argument("--text-encoder", default=None, metavar="NAME", help="text encoder name or folder")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="encoder input size (default: the size the weights recommend, 256 for the bundled model; else their native size)")
    parser.add_argument("--cache-dir", default=None, metavar="D", help="on-disk feature cache (resumable)")
    parser.add_argument("--batch-size", type=int, default=None, help="frames per encoder call")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_arguments(args) -> list[tuple[int, dict]]:
    """Everything that can be checked before the video is opened; returns the prompt objects
    [(frame, add_object keywords)]: the boxes, then the clicks."""
    from ..export import format_for_path

    if not args.text and not args.box and not args.click:
        raise ValueError("nothing to segment: give at least one --text expression, --box or --click")
    for text in args.text:
        if not text.strip():
            raise ValueError("--text is empty; give an expression such as --text 'the red circle'")
    if args.name is not None and not args.name.strip():
        raise ValueError("--name is empty; give the video a name, or leave --name out to use the file name")
    if args.output is None and args.dataset is None:
        raise ValueError("give -o OUT (a .tif/.tiff, .json or folder/) and/or --dataset DIR")
    if args.output is not None:
        refuse_replacing_the_video(args.video, args.output, "-o")
        _check_output(args, format_for_path(args.output))  # before any work, not after the whole video
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    prompts = []
    for box in args.box:
        try:
            frame, coords = int(box[0]), [float(v) for v in box[1:]]
        except ValueError:
            raise ValueError(f"--box takes FRAME X0 Y0 X1 Y1 as numbers, got {' '.join(box)}") from None
        prompts.append((frame, {"box": coords}))
    prompts += [_parse_click(click) for click in args.click]
    _check_png_ids(args, len(args.text) + len(prompts))
    if not Path(args.video).exists():
        raise FileNotFoundError(f"video {args.video} does not exist")
    if args.cache_dir is not None and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        raise ValueError(f"--cache-dir {args.cache_dir} is a file, not a folder for the feature cache")
    if args.dataset is not None and Path(args.dataset).exists() and not Path(args.dataset).is_dir():
        raise ValueError(f"--dataset {args.dataset} is a file, not a dataset folder")
    return prompts


def _parse_click(click: list[str]) -> tuple[int, dict]:
    """``--click FRAME X,Y[,L] ...`` -> (frame, {"points": [(x, y)], "labels": [l]})."""
    usage = f"--click takes FRAME then X,Y or X,Y,0 (a click not on the object) per click, got {' '.join(click)}"
    if len(click) < 2:
        raise ValueError(usage)
    try:
        frame = int(click[0])
        parts = [[float(v) for v in point.split(",")] for point in click[1:]]
    except ValueError:
        raise ValueError(usage) from None
    if any(len(p) not in (2, 3) or (len(p) == 3 and p[2] not in (0, 1)) for p in parts):
        raise ValueError(usage)
    labels = [int(p[2]) if len(p) == 3 else 1 for p in parts]
    return frame, {"points": [(p[0], p[1]) for p in parts], "labels": labels}


def _check_png_ids(args, objects: int) -> None:
    """Object i gets label i: palette PNG outputs (-o folder/, --dataset) hold 255 objects at most."""
    from ..export import format_for_path
    from ..export.png import MAX_PNG_ID

    if objects <= MAX_PNG_ID:
        return
    if args.output is not None and format_for_path(args.output) == "png":
        raise ValueError(f"{objects} objects do not fit palette PNGs (-o {args.output}: ids up to {MAX_PNG_ID}); "
                         "export to .tif or .json instead")
    if args.dataset is not None:
        raise ValueError(f"{objects} objects do not fit a --dataset (palette PNG annotations: ids up to "
                         f"{MAX_PNG_ID}); segment at most {MAX_PNG_ID} objects per video there")


def _check_output(args, kind: str) -> None:
    """Refuse an -o that cannot be written, or that --overwrite must not replace, before the model runs."""
    from ..atomic import OutputExistsError, check_replaceable_dir, check_target
    from ..export._common import refuse_ending_only
    from ..export.png import is_png_export_file

    target = check_target(args.output, overwrite=True)  # the folder it goes in exists
    if kind != "png" and target.is_dir():  # said first: --overwrite would not help
        raise ValueError(f"-o {args.output} is a folder; name a .tif/.json file, or end the path with '/' for PNG frames")
    refuse_ending_only(args.output, "-o", png="end the -o path with '/'")  # Path(".tif").suffix is ""
    if target.exists() and not args.overwrite:
        raise OutputExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    if kind == "png":
        check_replaceable_dir(target, is_png_export_file)


def _load_model(args):
    from ..weights import load_refsam

    weights = None if str(args.model).lower() == "none" else args.model
    return load_refsam(weights, preset=args.preset, sam_checkpoint=args.sam_checkpoint,
                       text_encoder=args.text_encoder, device=args.device, image_size=args.image_size)


def run(args) -> int:
    import torch

    from ..errors import PromptError, RefSAMError, VideoReadError
    from ..export import write_labels
    from ..video.objects import check_add_arguments
    from ..video.session import VideoSession
    from ..video.source import open_video
    from .progress import progress

    prompts = _check_arguments(args)
    written = []
    with open_video(args.video) as source:
        for frame, prompt in prompts:  # checked against the video before the model loads
            try:
                check_add_arguments(None, frame, prompt.get("box"), prompt.get("points"), prompt.get("labels"),
                                    None, source.num_frames, source.height, source.width)
            except PromptError as exc:
                raise PromptError(f"{'--box' if 'box' in prompt else '--click'} on frame {frame}: {exc}") from None
        name = source.name if args.name is None else args.name
        if args.dataset is not None:
            from ..data.ytvos import check_can_add

            check_can_add(args.dataset, name, args.overwrite)  # before the model runs, not after
            for part in ("JPEGImages", "Annotations"):  # the two folders the dataset writer replaces
                refuse_replacing_the_video(args.video, Path(args.dataset) / part / name, "--dataset")
        try:
            model = _load_model(args)
            with VideoSession(model, source, cache_dir=args.cache_dir, batch_size=args.batch_size) as session:
                for text in args.text:
                    session.add_object(text=text)
                for frame, prompt in prompts:
                    session.add_object(frame=frame, **prompt)
                expressions = {i: [info["text"]] for i, info in session.objects.items() if info["text"]}
                with progress(session.planned_frames(), f"segment {source.name}", quiet=args.quiet) as bar:
                    done = 0
                    try:
                        for _ in session.propagate():
                            done += 1
                            bar.update(1)
                    except VideoReadError as exc:
                        if args.output is None or done == 0:
                            raise  # nothing segmented: no empty output in the way of the next try
                        # The frames segmented before the unreadable one are kept, not thrown away.
                        path = write_labels(args.output, session.labels, expressions, overwrite=args.overwrite,
                                            fps=source.fps, video_name=name)
                        raise VideoReadError(f"{exc}; the {done} frame(s) segmented before it were written to "
                                             f"{path}, the others left empty") from exc
                if args.output is not None:
                    written.append(write_labels(args.output, session.labels, expressions,
                                                overwrite=args.overwrite, fps=source.fps, video_name=name))
                if args.dataset is not None:
                    from ..data.ytvos import write_video

                    written.append(write_video(args.dataset, name, source, session.labels, expressions,
                                               overwrite=args.overwrite))
        except (RuntimeError, torch.OutOfMemoryError) as exc:  # anything torch raises from deep inside
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RefSAMError(f"the model failed while segmenting {args.video}: {first}") from exc
    for path in written:
        print(path)
    return 0
