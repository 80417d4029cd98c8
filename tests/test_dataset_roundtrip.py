"""An exported Ref-YouTube-VOS dataset is what the training loader reads: same masks, same expressions."""
from __future__ import annotations

import numpy as np

from src_model.data.loader import RefClipDataset
from src_model.data.synthetic import generate_clip
from src_model.export import write_dataset_video


def test_exported_dataset_feeds_the_training_loader(tmp_path):
    clips = [generate_clip(seed, num_frames=6, size=(64, 96)) for seed in (1, 2)]
    for clip in clips:
        expressions = {k: v["expressions"] for k, v in clip.objects.items()}
        write_dataset_video(tmp_path, clip.name, clip.frames, clip.labels, expressions)
    dataset = RefClipDataset(tmp_path, num_frames=3, augment=False, seed=0)
    by_name = {clip.name: clip for clip in clips}
    expected = {(c.name, obj, text) for c in clips for obj, o in c.objects.items() for text in o["expressions"]}
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        clip = by_name[item["video"]]
        seen.add((item["video"], item["obj_id"], item["text"]))
        for t, frame in enumerate(item["frame_indices"]):
            gt = clip.labels[frame] == item["obj_id"]
            assert np.array_equal(np.asarray(item["masks"][t]), gt)
            # JPEG is lossy, but frames must be the right ones.
            diff = np.abs(np.asarray(item["frames"][t], np.int16) - clip.frames[frame].astype(np.int16))
            assert diff.mean() < 6
    assert seen == expected
