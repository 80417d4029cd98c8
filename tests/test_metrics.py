"""J and F against hand-computed values and the DAVIS-2017 toolkit's definitions."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from src_model.metrics import (
    bound_pixels,
    disk,
    evaluate_video,
    f_measure,
    j_and_f,
    jaccard,
    seg2bmap,
    summarize,
)


def square(shape, top, left, side):
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_identical_masks_score_one():
    mask = square((32, 40), 5, 7, 10)
    assert jaccard(mask, mask) == 1.0
    assert f_measure(mask, mask) == 1.0


def test_disjoint_masks():
    a = square((32, 40), 0, 0, 5)
    b = square((32, 40), 20, 30, 5)
    assert jaccard(a, b) == 0.0
    # Boundaries 20+ px apart with a 1 px tolerance (ceil(0.008 * 51.2)): nothing matches.
    assert f_measure(a, b) == 0.0


def test_small_square_inside_large_square():
    small = square((8, 8), 2, 2, 4)
    large = np.ones((8, 8), bool)
    assert jaccard(small, large) == pytest.approx(16 / 64)


def test_both_empty():
    empty = np.zeros((10, 12), bool)
    assert jaccard(empty, empty) == 1.0
    assert f_measure(empty, empty) == 1.0


def test_pred_empty_gt_not():
    # P = 1, R = 0 -> F = 0.
    gt = square((20, 20), 4, 4, 6)
    assert jaccard(np.zeros_like(gt), gt) == 0.0
    assert f_measure(np.zeros_like(gt), gt) == 0.0


def test_pred_not_empty_gt_empty():
    # P = 0, R = 1 -> F = 0.
    pred = square((20, 20), 4, 4, 6)
    assert jaccard(pred, np.zeros_like(pred)) == 0.0
    assert f_measure(pred, np.zeros_like(pred)) == 0.0


def test_seg2bmap_hand_drawn():
    seg = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 0, 1, 1],
        ],
        bool,
    )
    # Worked out pixel by pixel with "differs from E, S or SE"; the last row compares with E only,
    # the last column with S only, the bottom-right corner is never boundary.
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 0, 1, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_of_square_is_ring_shifted_up_left():
    # For a filled side-S square the map is the perimeter of the (S+1)-square one pixel up-left.
    bmap = seg2bmap(square((20, 20), 5, 6, 8))
    ring = square((20, 20), 4, 5, 9) & ~square((20, 20), 5, 6, 7)
    np.testing.assert_array_equal(bmap, ring)
    assert bmap.sum() == 4 * 8


def test_bound_pixels():
    assert bound_pixels((480, 854)) == 8  # ceil(0.008 * 979.65)
    assert bound_pixels((480, 854), bound_th=3) == 3


def test_disk_footprint():
    expected = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(disk(2), expected)


def test_disk_matches_skimage():
    morphology = pytest.importorskip("skimage.morphology")
    for r in range(0, 10):
        np.testing.assert_array_equal(disk(r), morphology.disk(r).astype(bool))


def test_one_pixel_shift_is_perfect_boundary():
    gt = square((480, 854), 100, 100, 100)
    pred = square((480, 854), 100, 101, 100)
    assert f_measure(pred, gt) == pytest.approx(1.0)
    assert jaccard(pred, gt) == pytest.approx(9900 / 10100)


def test_twenty_pixel_shift_hand_derived():
    # S = 100, shift d = 20 along x, tolerance 8 px. Each boundary is the 4S-pixel ring.
    # Matched pred pixels: top and bottom rows each S-19 on the gt row plus 8 within reach of the
    # gt corner; the left column 8 near the top and 8 near the bottom; the right column none.
    # -> 2(S-11) + 16 = 2S - 6 of 4S, and the same for gt by symmetry: P = R = F = 194/400.
    side = 100
    gt = square((480, 854), 100, 100, side)
    pred = square((480, 854), 100, 120, side)
    assert f_measure(pred, gt) == pytest.approx((2 * side - 6) / (4 * side))
    assert jaccard(pred, gt) == pytest.approx(80 * 100 / (120 * 100))


def reference_f(pred, gt, bound_th=0.008):
    """The toolkit's algorithm step by step, dilating with an explicit disk footprint."""
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    fg, gb = seg2bmap(pred), seg2bmap(gt)
    fg_dil = ndimage.binary_dilation(fg, disk(bound_pix))
    gt_dil = ndimage.binary_dilation(gb, disk(bound_pix))
    n_fg, n_gt = fg.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        p, r = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, r = 1, 1
    else:
        p, r = (fg & gt_dil).sum() / n_fg, (gb & fg_dil).sum() / n_gt
    return 0 if p + r == 0 else 2 * p * r / (p + r)


@pytest.mark.parametrize("bound_th", [0.008, 0.05, 2, 5])
def test_f_matches_explicit_dilation_on_random_blobs(bound_th):
    rng = np.random.default_rng(0)
    for _ in range(10):
        noise = rng.random((60, 90))
        pred = ndimage.gaussian_filter(noise, 3) > 0.5
        gt = ndimage.gaussian_filter(rng.random((60, 90)), 3) > 0.5
        assert f_measure(pred, gt, bound_th) == pytest.approx(reference_f(pred, gt, bound_th))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        jaccard(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="2-D"):
        f_measure(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool))


def test_evaluate_video_and_summary():
    gt = np.zeros((3, 480, 854), np.uint16)
    pred = np.zeros_like(gt)
    gt[:, 100:200, 100:200] = 1
    pred[:, 100:200, 120:220] = 1  # 20 px shift on every frame
    gt[:, 300:350, 400:450] = 2
    pred[0, 300:350, 400:450] = 2  # object 2 found only on frame 0
    res = evaluate_video(pred, gt)
    assert sorted(res) == [1, 2]
    assert res[1]["J_per_frame"] == pytest.approx([80 / 120] * 3)
    assert res[1]["F"] == pytest.approx(194 / 400)
    assert res[2]["J_per_frame"] == [1.0, 0.0, 0.0]
    assert res[2]["F_per_frame"] == [1.0, 0.0, 0.0]
    assert res[2]["J&F"] == pytest.approx(j_and_f(1 / 3, 1 / 3))
    dropped = evaluate_video(pred, gt, obj_ids=[2], drop_first_last=True)
    assert dropped[2]["J_per_frame"] == [0.0]
    total = summarize(res)
    assert total["J"] == pytest.approx((80 / 120 + 1 / 3) / 2)
    assert total["J&F"] == pytest.approx((total["J"] + total["F"]) / 2)


def test_j_and_f():
    assert j_and_f(0.5, 0.7) == pytest.approx(0.6)
