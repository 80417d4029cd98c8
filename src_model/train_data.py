"""Training data for ``train``: the dataset of a run, and its stream of collated micro-batches.

Items depend only on (seed, epoch, index) (see data/loader.py and data/synthetic_stream.py), so the
stream is the same whether this process builds it or DataLoader worker processes do.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import DatasetFormatError


def build_dataset(opts):
    """The run's dataset: streamed synthetic clips, or a Ref-YouTube-VOS-style folder."""
    if opts.data == "synthetic":
        from .data.synthetic_stream import SyntheticClipDataset

        return SyntheticClipDataset(num_frames=opts.num_frames, clip_frames=opts.synthetic_frames,
                                    size=opts.synthetic_size, seed=opts.seed,
                                    objects_per_clip=opts.objects_per_clip)
    from .data.loader import RefClipDataset

    if not Path(opts.data).is_dir():
        what = "not a folder" if Path(opts.data).exists() else "no such folder"
        raise FileNotFoundError(f"--data {opts.data}: {what} (a Ref-YouTube-VOS-style dataset folder, "
                                "or --data synthetic)")
    dataset = RefClipDataset(opts.data, opts.split, num_frames=opts.num_frames, size=opts.size, seed=opts.seed,
                             objects_per_clip=opts.objects_per_clip)
    skipped = dataset.unannotated
    if opts.size is None and opts.batch_size > 1:  # one clip per batch may keep its own size
        trained = {item[0] for item in dataset.items}  # a video with nothing to train on has no say
        dataset.size = common_frame_size({name: dataset.videos[name] for name in trained})
    if len(dataset) == 0:
        why = f"; {len(skipped)} video(s) have no annotation PNGs, e.g. Annotations/{skipped[0]}/" if skipped else ""
        raise DatasetFormatError(f"--data {opts.data}: no expressions with object ids and masks to train on{why}")
    if skipped:
        print(f"refsam train: skipping {len(skipped)} video(s) without annotation PNGs (e.g. {skipped[0]})",
              file=sys.stderr)
    return dataset


def fit_step_to_dataset(items: int, world: int, batch_size: int, accum: int) -> tuple[int, int, str | None]:
    """(batch size, accum, note): one step's ``batch_size x accum`` items lowered to fit the
    ``items // world`` items a rank has per epoch (a small export: an item is one expression with a
    mask), with a one-line note saying so, or None when they already fit.

    Keeps ``accum`` and lowers the batch size; only when even one clip per micro-batch needs more
    items does ``accum`` go down too. A function of the numbers alone, so a resumed run (whose data
    offset is ``step x batch_size x accum``) lowers the same way. Fewer items than ranks is refused.
    """
    per_rank = items // max(1, world)
    if batch_size * accum <= per_rank:
        return batch_size, accum, None
    what = f"{items} item{'s' if items != 1 else ''} (an item is one expression with a mask)"
    if per_rank == 0:
        raise ValueError(f"the dataset has {what}, fewer than the {world} training processes need (one each); "
                         "run fewer processes (torchrun --nproc-per-node) or add expressions to the dataset")
    if accum <= per_rank:
        lowered = (per_rank // accum, accum)
    else:
        lowered = (1, per_rank)
    where = f", {per_rank} for each of the {world} processes," if world > 1 else ","
    changed = " and ".join(f"--{flag} {new}" for flag, old, new in
                           (("batch-size", batch_size, lowered[0]), ("accum", accum, lowered[1])) if old != new)
    note = (f"refsam train: the dataset has {what}{where} fewer than one step of --batch-size {batch_size} "
            f"x --accum {accum} takes; training with {changed} instead (more expressions allow larger steps)")
    return lowered[0], lowered[1], note


def common_frame_size(videos) -> tuple[int, int] | None:
    """None when every video has one frame size; else the most common (H, W), to which all clips
    are then resized, aspect ratio not kept (a batch stacks clips of one size). Only image headers
    are read."""
    from collections import Counter

    from PIL import Image

    sizes = Counter()
    for video in videos.values():
        if video.image_paths:
            with Image.open(video.image_paths[0]) as image:
                sizes[(image.height, image.width)] += 1
    if len(sizes) < 2:
        return None
    size = sizes.most_common(1)[0][0]
    print(f"refsam train: the videos have {len(sizes)} frame sizes; every clip is resized to "
          f"{size[0]}x{size[1]}, the most common, stretching the others to it (--size N for N x N; "
          "--batch-size 1 keeps each clip's size)", file=sys.stderr)
    return size


def step_batches(sampler, per_step: int, start: int):
    """Infinite stream of (epoch, index list of ``per_step`` items for this rank), starting after ``start`` items."""
    per_epoch = len(sampler) - len(sampler) % per_step
    if per_epoch == 0:
        raise ValueError(f"the dataset has {len(sampler.dataset)} items, fewer than one step needs ({per_step} per rank)")
    epoch, offset = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        order = list(sampler)[:per_epoch]
        for i in range(offset, per_epoch, per_step):
            yield epoch, order[i: i + per_step]
        epoch, offset = epoch + 1, 0


class _EpochItems:
    """``dataset[(epoch, i)]`` = item i of that epoch: the epoch travels with the index, so worker
    processes (each with its own copy of the dataset) build exactly the items the main process would."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        try:
            return self.dataset[index]
        except Exception as exc:  # e.g. an unreadable annotation: raised as itself by micro_batches
            return _ItemError(exc)


class _ItemError:
    """An item's exception carried out of a worker process as a value: DataLoader would re-raise it
    with the worker's whole traceback folded into the message, which the CLI prints as one line."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


def _collate_items(items: list):
    from .data.loader import collate

    failed = next((item for item in items if isinstance(item, _ItemError)), None)
    return failed if failed is not None else collate(items)


def micro_batches(dataset, steps, batch_size: int, accum: int, workers: int = 0, pin_memory: bool = False):
    """Collated micro-batches, ``accum`` per step of ``steps`` (from ``step_batches``), in order.

    workers > 0: built by that many worker processes, a few batches ahead of the training step
    (the synthetic generator costs ~11 ms a clip on one core, which would leave a GPU idle);
    the batches are the same as with workers=0.
    """
    from torch.utils.data import DataLoader

    items = _EpochItems(dataset)
    keys = ([(epoch, i) for i in indices[k * batch_size:(k + 1) * batch_size]]
            for epoch, indices in steps for k in range(accum))
    if workers <= 0:
        batches = (_collate_items([items[key] for key in batch_keys]) for batch_keys in keys)
    else:
        batches = DataLoader(items, batch_sampler=keys, num_workers=workers, collate_fn=_collate_items,
                             pin_memory=pin_memory, prefetch_factor=4, persistent_workers=False)
    for batch in batches:
        if isinstance(batch, _ItemError):
            raise batch.exc
        yield batch
