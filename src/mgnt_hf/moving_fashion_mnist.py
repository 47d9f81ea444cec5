"""Moving Fashion-MNIST: the offline stand-in for UCF101-style class-conditional video and
Kinetics-style frame prediction.

Each video is `num_frames` grayscale `size x size` frames in which two Fashion-MNIST items (28x28)
move in straight lines and bounce off the borders (Moving MNIST, Srivastava et al. 2015, with
clothes). The label is the class of the *first* item. So that the label can be read from the
pixels, the first item is drawn at full intensity and the second (the distractor) at
`distractor_intensity`; overlaps take the brighter pixel.

Everything is a function of `(seed, split, index)`: video `i` of a split is the same whatever the
number of videos generated, on any machine (numpy's PCG64 stream is stable across versions).
Items of the `train` split come from Fashion-MNIST's training images, those of `test` from its test
images.

    python training/prepare_moving_fashion_mnist.py --output_dir data/moving-fashion-mnist
"""

from __future__ import annotations

import datasets
import numpy as np

from .data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_fashion_mnist
from .utils.checks import check_choice, check_finite_number, check_positive_int

SPLIT_IDS = {"train": 0, "test": 1}
ITEM_SIZE = 28


def _trajectory(rng: np.random.Generator, num_frames: int, span: int) -> np.ndarray:
    """`[T, 2]` integer top-left corners in `[0, span]`, moving at a constant speed and reflecting at the borders."""
    start = rng.uniform(0, span, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(2.0, 4.0)  # pixels per frame
    velocity = speed * np.array([np.sin(angle), np.cos(angle)])
    positions = np.empty((num_frames, 2))
    position = start
    for frame in range(num_frames):
        positions[frame] = position
        position = position + velocity
        for axis in range(2):  # reflect off the border
            if position[axis] < 0:
                position[axis], velocity[axis] = -position[axis], -velocity[axis]
            elif position[axis] > span:
                position[axis], velocity[axis] = 2 * span - position[axis], -velocity[axis]
    return np.rint(positions).astype(np.int64)


def render_video(items: list[np.ndarray], intensities: list[float], trajectories: list[np.ndarray],
                 size: int) -> np.ndarray:
    """uint8 `[T, size, size]`: each `[28, 28]` item scaled by its intensity and placed along its `[T, 2]`
    trajectory; overlapping pixels keep the maximum."""
    num_frames = trajectories[0].shape[0]
    video = np.zeros((num_frames, size, size), dtype=np.uint8)
    for item, intensity, trajectory in zip(items, intensities, trajectories):
        scaled = np.rint(item.astype(np.float32) * intensity).astype(np.uint8)
        for frame, (row, column) in enumerate(trajectory):
            window = video[frame, row:row + ITEM_SIZE, column:column + ITEM_SIZE]
            np.maximum(window, scaled, out=window)
    return video


def moving_fashion_mnist_video(images: np.ndarray, labels: np.ndarray, seed: int, split: str, index: int,
                               num_frames: int = 16, size: int = 64,
                               distractor_intensity: float = 0.5) -> dict:
    """Video `index` of `split`: `{"video": uint8 [T, size, size], "label": class of the first item,
    "distractor_label": class of the second, "item_indices": [first, second] rows of images}`."""
    check_choice("split", split, SPLIT_IDS)
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    picks = rng.integers(0, len(images), size=2)
    span = size - ITEM_SIZE
    trajectories = [_trajectory(rng, num_frames, span) for _ in range(2)]
    video = render_video([images[picks[0]], images[picks[1]]], [1.0, distractor_intensity], trajectories, size)
    return {"video": video, "label": int(labels[picks[0]]), "distractor_label": int(labels[picks[1]]),
            "item_indices": [int(pick) for pick in picks]}


def video_features(num_frames: int, size: int) -> datasets.Features:
    classes = datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES))
    return datasets.Features({
        "video": datasets.Array3D(shape=(num_frames, size, size), dtype="uint8"),
        "label": classes,
        "distractor_label": classes,
    })


def _generate(split: str, num_videos: int, seed: int, num_frames: int, size: int, distractor_intensity: float,
              source_dir: str):
    images, labels = read_fashion_mnist(split, source_dir)
    for index in range(num_videos):
        row = moving_fashion_mnist_video(images, labels, seed, split, index, num_frames, size, distractor_intensity)
        row.pop("item_indices")
        yield row


def build_moving_fashion_mnist(num_videos: dict[str, int], seed: int = 0, num_frames: int = 16, size: int = 64,
                               distractor_intensity: float = 0.5,
                               source_dir: str = FASHION_MNIST_DIR) -> datasets.DatasetDict:
    """A `DatasetDict` with the given number of videos per split (e.g. `{"train": 10000, "test": 1000}`).

    Columns: `video` (uint8 `Array3D [num_frames, size, size]`), `label` and `distractor_label`
    (`ClassLabel`s with the Fashion-MNIST names)."""
    num_frames = check_positive_int("num_frames", num_frames)
    size = check_positive_int("size", size)
    if size <= ITEM_SIZE:  # the items could not move
        raise ValueError(f"size must be an integer >= {ITEM_SIZE + 1} (larger than the {ITEM_SIZE}x{ITEM_SIZE} "
                         f"items), got {size!r}")
    distractor_intensity = check_finite_number("distractor_intensity", distractor_intensity, minimum=0, maximum=1,
                                               exclusive_minimum=True)
    splits = {}
    for split, count in num_videos.items():
        check_choice("split", split, SPLIT_IDS)
        count = check_positive_int(f"number of {split} videos", count)
        splits[split] = datasets.Dataset.from_generator(
            _generate, features=video_features(num_frames, size),
            gen_kwargs=dict(split=split, num_videos=count, seed=seed, num_frames=num_frames, size=size,
                            distractor_intensity=distractor_intensity, source_dir=source_dir),
            # Rows depend only on these arguments; keep datasets' generator cache out of the way.
            keep_in_memory=True,
        )
    return datasets.DatasetDict(splits)
