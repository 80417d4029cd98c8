"""Video object segmentation metrics: region similarity J and boundary accuracy F.

Both follow the DAVIS-2017 evaluation toolkit (davis2017-evaluation), including its edge cases, so
numbers are comparable with published Ref-DAVIS17 / Ref-YouTube-VOS results:

- J is the intersection over union of two boolean masks; two empty masks score 1.
- F is the F-measure of boundary precision and recall. A boundary pixel counts as matched when a
  boundary pixel of the other mask lies within ``bound_pix`` pixels (a disk), where ``bound_pix`` is
  ``ceil(0.008 * image diagonal)`` (8 px for a 480 x 854 DAVIS frame).
- J&F is the mean of the two.

Implemented with numpy and scipy only (the toolkit uses scikit-image and OpenCV).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "jaccard",
    "f_measure",
    "seg2bmap",
    "bound_pixels",
    "disk",
    "j_and_f",
    "evaluate_video",
    "summarize",
]


def _as_mask(mask, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt masks differ in shape: {pred.shape} vs {gt.shape}")


def jaccard(pred, gt) -> float:
    """Region similarity J = |pred & gt| / |pred | gt| of two boolean (H, W) masks.

    Two empty masks score 1.0 (the toolkit's rule: nothing to find and nothing found is perfect).
    """
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _check_same_shape(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def bound_pixels(shape: Sequence[int], bound_th: float = 0.008) -> float:
    """Boundary tolerance in pixels for an image of ``shape`` (H, W).

    ``bound_th >= 1`` is taken as an absolute number of pixels; below 1 it is a fraction of the
    image diagonal, rounded up: ``ceil(bound_th * sqrt(H^2 + W^2))``.
    """
    if bound_th >= 1:
        return bound_th
    return float(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def disk(radius: float) -> np.ndarray:
    """Disk structuring element: bool (2r+1, 2r+1) array with ``x^2 + y^2 <= r^2``.

    Same footprint as ``skimage.morphology.disk`` for an integer radius.
    """
    r = int(math.floor(radius))
    offsets = np.arange(-r, r + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2


def seg2bmap(seg) -> np.ndarray:
    """One-pixel-wide boundary map of a binary (H, W) mask, as the DAVIS toolkit's ``seg2bmap``.

    A pixel is boundary when it differs from its east, south or south-east neighbour (neighbours
    outside the image count as background). On the last row only the east neighbour is compared,
    on the last column only the south one, and the bottom-right pixel is never boundary — the
    toolkit's rule, kept as is so F matches published numbers. Returns bool (H, W).
    """
    seg = _as_mask(seg, "seg")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def _dilate(bmap: np.ndarray, radius: float) -> np.ndarray:
    """Dilate a non-empty bool map with ``disk(radius)``.

    A pixel is in the dilation exactly when its Euclidean distance to the nearest set pixel is
    <= radius, which is what the disk footprint encodes; the exact distance transform gets there
    in O(H W) instead of O(H W r^2). Pixels outside the image never contribute (as cv2.dilate's
    default border).
    """
    distance = ndimage.distance_transform_edt(~bmap)
    return distance <= radius


def _boundary_precision_recall(pred: np.ndarray, gt: np.ndarray, bound_pix: float) -> tuple[float, float]:
    pred_b, gt_b = seg2bmap(pred), seg2bmap(gt)
    n_pred, n_gt = int(np.count_nonzero(pred_b)), int(np.count_nonzero(gt_b))
    # The toolkit's edge cases: a missing boundary is perfectly precise but recalls nothing.
    if n_pred == 0 and n_gt > 0:
        return 1.0, 0.0
    if n_pred > 0 and n_gt == 0:
        return 0.0, 1.0
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0
    pred_matched = np.count_nonzero(pred_b & _dilate(gt_b, bound_pix))
    gt_matched = np.count_nonzero(gt_b & _dilate(pred_b, bound_pix))
    return pred_matched / n_pred, gt_matched / n_gt


def f_measure(pred, gt, bound_th: float = 0.008) -> float:
    """Boundary F-measure of two boolean (H, W) masks, DAVIS-2017 definition.

    ``bound_th``: tolerance as a fraction of the image diagonal (< 1) or in pixels (>= 1).
    Returns ``2 P R / (P + R)``, or 0 when P + R == 0.
    """
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _check_same_shape(pred, gt)
    precision, recall = _boundary_precision_recall(pred, gt, bound_pixels(pred.shape, bound_th))
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def j_and_f(j: float, f: float) -> float:
    """The headline score J&F = (J + F) / 2."""
    return (float(j) + float(f)) / 2.0


def evaluate_video(
    pred_labels,
    gt_labels,
    obj_ids: Iterable[int] | None = None,
    bound_th: float = 0.008,
    drop_first_last: bool = False,
) -> dict[int, dict]:
    """Per-object J and F over a video of label volumes.

    pred_labels, gt_labels: (T, H, W) integer ids (0 = background); frames are read one at a time,
    so memmaps are fine. obj_ids: the ids to score (default: every non-zero id in ``gt_labels``).
    drop_first_last: skip the first and last frame, as the DAVIS-2017 toolkit does (the first
    frame is the given reference in semi-supervised VOS); off for referring VOS on full videos.

    Returns ``{obj_id: {"J": mean, "F": mean, "J&F": mean of the two,
    "J_per_frame": [T'], "F_per_frame": [T']}}``.
    """
    if len(pred_labels) != len(gt_labels):
        raise ValueError(f"pred has {len(pred_labels)} frames but gt has {len(gt_labels)}")
    frames = range(len(gt_labels))
    if drop_first_last:
        frames = frames[1:-1]
    if obj_ids is None:
        found: set[int] = set()
        for t in frames:
            found.update(int(i) for i in np.unique(np.asarray(gt_labels[t])) if i != 0)
        obj_ids = sorted(found)
    obj_ids = [int(i) for i in obj_ids]

    per_frame: dict[int, tuple[list[float], list[float]]] = {i: ([], []) for i in obj_ids}
    for t in frames:
        pred, gt = np.asarray(pred_labels[t]), np.asarray(gt_labels[t])
        if pred.shape != gt.shape:
            raise ValueError(f"frame {t}: pred shape {pred.shape} differs from gt shape {gt.shape}")
        for obj in obj_ids:
            pred_mask, gt_mask = pred == obj, gt == obj
            per_frame[obj][0].append(jaccard(pred_mask, gt_mask))
            per_frame[obj][1].append(f_measure(pred_mask, gt_mask, bound_th))

    results = {}
    for obj, (js, fs) in per_frame.items():
        # A video with no scored frame gives NaN rather than a made-up perfect score.
        j_mean = float(np.mean(js)) if js else float("nan")
        f_mean = float(np.mean(fs)) if fs else float("nan")
        results[obj] = {
            "J": j_mean,
            "F": f_mean,
            "J&F": j_and_f(j_mean, f_mean),
            "J_per_frame": js,
            "F_per_frame": fs,
        }
    return results


def summarize(results: dict[int, dict]) -> dict[str, float]:
    """Mean J, F and J&F over the objects of one or more ``evaluate_video`` results.

    Objects are weighted equally (the DAVIS convention: per object, not per frame).
    """
    if not results:
        return {"J": float("nan"), "F": float("nan"), "J&F": float("nan")}
    j = float(np.mean([r["J"] for r in results.values()]))
    f = float(np.mean([r["F"] for r in results.values()]))
    return {"J": j, "F": f, "J&F": j_and_f(j, f)}
