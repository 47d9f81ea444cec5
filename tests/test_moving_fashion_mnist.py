"""Moving Fashion-MNIST, the offline video stand-in: determinism, motion inside the frame, labels, dataset build."""

import numpy as np
import pytest

from mgnt_hf.moving_fashion_mnist import ITEM_SIZE, build_moving_fashion_mnist, moving_fashion_mnist_video
from test_data import write_fake_fashion_mnist


def fake_items(count=6, seed=0):
    """Distinct 28x28 items (uint8, all pixels > 0 so every pixel of a placed item is visible) and labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 256, size=(count, ITEM_SIZE, ITEM_SIZE), dtype=np.uint8)
    return images, np.arange(count, dtype=np.uint8) % 10


def test_same_seed_split_index_gives_the_same_video_and_others_differ():
    images, labels = fake_items()
    first = moving_fashion_mnist_video(images, labels, seed=0, split="train", index=3)
    again = moving_fashion_mnist_video(images, labels, seed=0, split="train", index=3)
    assert np.array_equal(first["video"], again["video"]) and first["label"] == again["label"]
    for other in (dict(seed=1, split="train", index=3), dict(seed=0, split="test", index=3),
                  dict(seed=0, split="train", index=4)):
        assert not np.array_equal(moving_fashion_mnist_video(images, labels, **other)["video"], first["video"])


def test_video_shape_motion_and_labels():
    images, labels = fake_items()
    row = moving_fashion_mnist_video(images, labels, seed=0, split="train", index=0, num_frames=16, size=64)
    video = row["video"]
    assert video.shape == (16, 64, 64) and video.dtype == np.uint8
    first, second = row["item_indices"]
    assert row["label"] == labels[first] and row["distractor_label"] == labels[second]
    assert any(not np.array_equal(video[t], video[t + 1]) for t in range(15))  # the items move
    # The first item is drawn at full intensity: its brightest pixel appears in every frame.
    assert all(int(frame.max()) >= int(images[first].max()) for frame in video)


def test_a_lone_bright_item_stays_whole_inside_the_frame():
    """With the distractor black, every frame holds the first item's pixels exactly once, never clipped."""
    images = np.zeros((2, ITEM_SIZE, ITEM_SIZE), dtype=np.uint8)
    images[:] = 200
    for index in range(20):
        video = moving_fashion_mnist_video(images, np.zeros(2, dtype=np.uint8), seed=0, split="test", index=index,
                                           size=40, distractor_intensity=0.001)["video"]
        assert all(int((frame == 200).sum()) == ITEM_SIZE * ITEM_SIZE for frame in video)


def test_distractor_is_dimmer():
    images = np.full((2, ITEM_SIZE, ITEM_SIZE), 200, dtype=np.uint8)
    video = moving_fashion_mnist_video(images, np.zeros(2, dtype=np.uint8), seed=0, split="train", index=0)["video"]
    assert set(np.unique(video)) <= {0, 100, 200}
    assert (video == 100).any()


def test_build_dataset_is_deterministic_and_prefix_stable(tmp_path):
    write_fake_fashion_mnist(tmp_path, num_train=5, num_test=3)
    small = build_moving_fashion_mnist({"train": 3, "test": 2}, seed=0, num_frames=4, size=32, source_dir=str(tmp_path))
    large = build_moving_fashion_mnist({"train": 5}, seed=0, num_frames=4, size=32, source_dir=str(tmp_path))
    assert small["train"].features["video"].shape == (4, 32, 32)
    assert small["train"].features["label"].names[0] == "T-shirt/top"
    for index in range(3):  # video i does not depend on how many videos were generated
        assert np.array_equal(np.asarray(small["train"][index]["video"]), np.asarray(large["train"][index]["video"]))
        assert small["train"][index]["label"] == large["train"][index]["label"]
    again = build_moving_fashion_mnist({"test": 2}, seed=0, num_frames=4, size=32, source_dir=str(tmp_path))
    assert np.array_equal(np.asarray(again["test"]["video"]), np.asarray(small["test"]["video"]))


@pytest.mark.parametrize("arguments, message", [
    (dict(num_videos={"validation": 2}), "split must be one of"),
    (dict(num_videos={"train": 0}), "number of train videos"),
    (dict(num_videos={"train": 2}, size=28), "size must be an integer >= 29"),
    (dict(num_videos={"train": 2}, num_frames=0), "num_frames"),
    (dict(num_videos={"train": 2}, distractor_intensity=0.0), "distractor_intensity"),
])
def test_bad_arguments_raise(tmp_path, arguments, message):
    write_fake_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match=message):
        build_moving_fashion_mnist(source_dir=str(tmp_path), **arguments)
