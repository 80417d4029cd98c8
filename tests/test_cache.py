"""FeatureCache: every frame encoded once, fp16 in memory and on disk, resumable, refused on mismatch."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from src_model.errors import CacheMismatchError
from src_model.video.cache import FeatureCache

T, H, W = 6, 64, 96


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(tiny_model, video):
    """Features of every frame from a memory-only cache, as (embedding, hier) fp32 numpy."""
    cache = FeatureCache(tiny_model, video, batch_size=4)
    out = {i: (f.embedding.numpy().copy(), f.hier.numpy().copy()) for i, f in cache.iter_features(range(T))}
    assert cache.frames_encoded == T and cache.encoder_calls == 2
    return out


def same(feats, ref) -> bool:
    return np.array_equal(feats.embedding.numpy(), ref[0]) and np.array_equal(feats.hier.numpy(), ref[1])


def test_features_are_fp16_rounded_model_outputs(tiny_model, video, reference):
    with torch.inference_mode():
        direct = tiny_model.encode_frames(video[:2])
    cfg = tiny_model.config.sam
    assert reference[0][0].shape == (1, cfg.prompt_embed_dim, cfg.embedding_size, cfg.embedding_size)
    assert reference[0][0].dtype == np.float32
    for i in range(2):
        want = direct.embedding[i].half().float().numpy()
        np.testing.assert_allclose(reference[i][0][0], want, atol=2e-3, rtol=2e-3)
        # stored as fp16: the values are exactly representable in fp16
        assert np.array_equal(reference[i][0], reference[i][0].astype(np.float16).astype(np.float32))


def test_disk_cache_equals_memory_and_reopens_without_encoding(tiny_model, video, reference, tmp_path):
    cache = FeatureCache(tiny_model, video, cache_dir=tmp_path, batch_size=3)
    got = dict(cache.iter_features([5, 4, 3, 2, 1, 0]))  # any order
    assert cache.frames_encoded == T and cache.encoder_calls == 2
    assert all(same(got[i], reference[i]) for i in range(T))
    meta = json.loads((cache.folder / "meta.json").read_text())
    assert meta["weights_id"] == tiny_model.weights_id and meta["num_frames"] == T
    cache.close()
    again = FeatureCache(tiny_model, video, cache_dir=tmp_path, max_bytes=0)
    assert again.folder == cache.folder
    assert all(same(again.get(i), reference[i]) for i in range(T))
    assert again.frames_encoded == 0 and again.memory_bytes == 0


def test_partial_cache_resumes(tiny_model, video, reference, tmp_path):
    cache = FeatureCache(tiny_model, video, cache_dir=tmp_path, batch_size=2)
    features = cache.iter_features(range(T))
    next(features)  # the first batch (frames 0 and 1) is encoded and on disk; then "crash"
    features.close()
    assert cache.frames_encoded == 2
    resumed = FeatureCache(tiny_model, video, cache_dir=tmp_path, batch_size=2)
    assert resumed.missing(range(T)) == [2, 3, 4, 5]
    assert resumed.ensure() == 4 and resumed.frames_encoded == 4
    assert all(same(resumed.get(i), reference[i]) for i in range(T))


def test_mismatching_cache_is_refused(tiny_model, video, tmp_path):
    cache = FeatureCache(tiny_model, video, cache_dir=tmp_path)
    cache.ensure([0])
    folder = cache.folder
    cache.close()
    # Another video under the same root gets its own folder: no clash.
    other = FeatureCache(tiny_model, video[::-1].copy(), cache_dir=tmp_path)
    assert other.folder != folder
    other.close()
    # cache_dir naming the folder itself, for another video: refused, naming the key.
    with pytest.raises(CacheMismatchError, match="video"):
        FeatureCache(tiny_model, video[::-1].copy(), cache_dir=folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "weights_id": "someone-else"}))
    with pytest.raises(CacheMismatchError, match="weights_id"):
        FeatureCache(tiny_model, video, cache_dir=tmp_path)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(CacheMismatchError, match="corrupt"):
        FeatureCache(tiny_model, video, cache_dir=tmp_path)
    (folder / "meta.json").write_text(json.dumps(meta))
    with open(folder / "embedding.f16", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(CacheMismatchError, match="embedding.f16"):
        FeatureCache(tiny_model, video, cache_dir=tmp_path)


def test_memory_budget_is_an_lru(tiny_model, video, reference):
    cfg = tiny_model.config.sam
    budget = 2 * (2 * 2 * cfg.prompt_embed_dim * cfg.embedding_size ** 2)  # two frames of F and F_h, fp16
    cache = FeatureCache(tiny_model, video, max_bytes=budget + 100, batch_size=3)
    assert cache.frame_bytes == budget // 2
    for i, feats in cache.iter_features(range(T)):
        assert cache.memory_bytes <= budget
        assert same(feats, reference[i])
    assert cache.frames_encoded == T
    assert cache.has(T - 1) and not cache.has(0) and cache._memory.allocated_bytes == budget
    assert same(cache.get(0), reference[0]) and cache.frames_encoded == T + 1  # evicted: encoded again
    assert same(cache.get(T - 1), reference[T - 1]) and cache.frames_encoded == T + 1


def test_bad_indices(tiny_model, video):
    cache = FeatureCache(tiny_model, video)
    with pytest.raises(IndexError, match="out of range"):
        cache.get(T)
    with pytest.raises(TypeError):
        cache.get(1.5)
    assert cache.frames_encoded == 0


def test_frames_resized_on_the_reader_thread_encode_bit_identically(tiny_model, video, reference):
    # The cache hands the encoder frames its reader thread already resized; preprocess must treat
    # them exactly as the raw frames, so a batch equals encode_frames on the raw batch bit for bit.
    resized = tiny_model.resize_for_encoder(video[0])
    assert resized.shape[:2] == tiny_model.resized_size(H, W) != (H, W)
    assert np.array_equal(tiny_model.resize_for_encoder(resized), resized)
    threads = []
    resize = tiny_model.resize_for_encoder

    def spy(frame):
        threads.append(threading.current_thread().name)
        return resize(frame)

    tiny_model.resize_for_encoder = spy  # an instance attribute, removed below: the shared model is unchanged
    try:
        fresh = FeatureCache(tiny_model, video, batch_size=4)
        assert [i for i, _ in fresh.iter_features(range(T))] == list(range(T))
    finally:
        del tiny_model.resize_for_encoder
    # every frame was resized once, off the thread that drives the encoder
    assert len(threads) == T and threading.main_thread().name not in threads
    with torch.inference_mode():
        direct = tiny_model.encode_frames(video[:4])
    for i in range(4):
        assert np.array_equal(reference[i][0][0], direct.embedding[i].half().float().numpy())
        assert np.array_equal(reference[i][1][0], direct.hier[i].half().float().numpy())


def test_reader_thread_transform_runs_in_order_and_fails_at_its_frame():
    from src_model.video.source import open_video

    frames = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    for prefetch in (0, 2):
        src = open_video(frames, prefetch=prefetch)
        got = list(src.iter_frames([3, 1], transform=lambda f: f[:2]))
        assert [i for i, _ in got] == [3, 1] and all(np.array_equal(f, frames[i][:2]) for i, f in got)

        def broken(frame):
            if frame[0, 0, 0] == frames[2][0, 0, 0]:
                raise ValueError("cannot resize frame 2")
            return frame

        seen = []
        with pytest.raises(ValueError, match="frame 2"):
            for i, _ in src.iter_frames(transform=broken):
                seen.append(i)
        assert seen == [0, 1]


FULL_DISK_SCRIPT = r"""
import json, resource, signal, sys, warnings
import numpy as np, torch
from src_model.video.cache import FeatureCache
from src_model.weights import load_refsam

torch.manual_seed(0)
model = load_refsam(None, preset="tiny", text_encoder=False, device="cpu")
video = np.random.default_rng(1).integers(0, 256, (6, 64, 96, 3), dtype=np.uint8)
fresh = FeatureCache(model, video, batch_size=1)
reference = {i: f.hier.numpy().copy() for i, f in fresh.iter_features(range(6))}
cache = FeatureCache(model, video, cache_dir=sys.argv[1], batch_size=1)  # files sized (sparse) here
row = cache._disk.row_bytes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (row + row // 2, resource.RLIM_INFINITY))  # frame 1 is cut short
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = {i: f.hier.numpy().copy() for i, f in cache.iter_features(range(6))}
cache.close()
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
again = FeatureCache(model, video, cache_dir=sys.argv[1], batch_size=1)
print(json.dumps({
    "run_equal": all(np.array_equal(got[i], reference[i]) for i in range(6)),
    "warnings": [str(w.message) for w in caught],
    "done": [bool(again.has(i)) for i in range(6)],
    "disk_equal": [bool(np.array_equal(again.get(i).hier.numpy(), reference[i])) for i in range(6) if again.has(i)],
}))
"""


def test_a_full_disk_leaves_no_half_written_frame_marked_done(tmp_path):
    """A write the disk cuts short (here a file-size limit) is not marked done: the run goes on
    from memory with a warning naming the cache, and a reopened cache holds only whole frames."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                             "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["run_equal"]
    assert len(out["warnings"]) == 1 and "feature cache" in out["warnings"][0] and "writing failed" in out["warnings"][0]
    assert out["done"] == [True, False, False, False, False, False]
    assert out["disk_equal"] == [True]
