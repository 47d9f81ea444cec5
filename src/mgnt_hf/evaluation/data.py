"""What an evaluation reads: real images and videos in the layouts the metrics take, and the feature classifier.

Layouts:

- classifier *pixels*: `torch.float32 [B, C, H, W]` in `[-1, 1]` (what the VQ tokenizer decodes), at exactly the
  classifier's `image_size`. [`pixels_from_images`] converts PIL images and numpy arrays, [`pad_pixels`] centres
  smaller images on background, [`frames_to_pixels`] flattens video frames.
- *videos*: `torch.float32 [N, T, C, H, W]` in `[0, 1]` (the video pipeline's `output_type="pt"`), from uint8
  `[N, T, H, W, C]` arrays by [`videos_to_tensor`]; [`load_video_arrays`] reads a split of a video dataset.

The classifier is found by [`resolve_classifier`] / [`load_classifier`]: an explicit folder, or the shipped
one by name (`mgnt_hf.shipped`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_fashion_mnist
from ..modeling_feature_classifier import MGNTFeatureClassifier
from ..resources import DEFAULT_CLASSIFIER, shipped
from ..video_io import decode_video, load_video_dataset, resolve_video_columns

FASHION_MNIST_LABELS = FASHION_MNIST_CLASSES


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def pad_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Pad `[B, C, h, w]` pixels in `[-1, 1]` to `[B, C, size, size]` with the background value -1, centred.

    Fashion-MNIST's 28x28 images become the 32x32 images the tokenizer and the classifier see.
    """
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be [B, C, H, W], got shape {tuple(pixels.shape)}")
    height, width = pixels.shape[-2:]
    if height > size or width > size or (size - height) % 2 or (size - width) % 2:
        raise ValueError(
            f"cannot centre-pad {height}x{width} pixels to {size}x{size}: each side must be at most {size} "
            f"and differ from it by an even number"
        )
    pad_h, pad_w = (size - height) // 2, (size - width) // 2
    return F.pad(pixels, (pad_w, pad_w, pad_h, pad_h), value=-1.0)


def pixels_from_images(images) -> torch.Tensor:
    """Convert images to the classifier's pixel layout: `float32 [B, C, H, W]` in `[-1, 1]`.

    Accepts:
        - a list of PIL images (mode `L` gives 1 channel, `RGB` 3 channels);
        - a numpy `uint8` array `[B, H, W]` or `[B, H, W, C]` with values in `[0, 255]`;
        - a numpy float array `[B, H, W, C]` with values in `[0, 1]` (diffusers' `output_type="np"`).
    Torch tensors are taken to be pixels already and are refused here, to keep the two layouts apart.
    """
    if isinstance(images, torch.Tensor):
        raise ValueError(
            "pixels_from_images converts PIL images or numpy arrays; a torch tensor is expected to be "
            "float [B, C, H, W] pixels in [-1, 1] already and can be passed to the classifier as it is"
        )
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("pixels_from_images got an empty list")
        images = np.stack([np.asarray(image) for image in images])
    if not isinstance(images, np.ndarray):
        raise ValueError(f"pixels_from_images accepts a list of PIL images or a numpy array, got {type(images).__name__}")
    if images.dtype == np.uint8:
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"uint8 images must be [B, H, W] or [B, H, W, C], got shape {images.shape}")
        array = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if images.ndim != 4:
            raise ValueError(f"float images must be [B, H, W, C] in [0, 1], got shape {images.shape}")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{images.min()}, {images.max()}]"
            )
        array = images.astype(np.float32)
    else:
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}")
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    return pixels * 2.0 - 1.0


def fashion_mnist_pixels(
    split: str = "test", data_dir: str | os.PathLike = FASHION_MNIST_DIR, image_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as classifier input: pixels `float32 [N, 1, image_size, image_size]` in `[-1, 1]`
    (28x28 centre-padded with background) and labels `int64 [N]`."""
    images, labels = read_fashion_mnist(split, os.fspath(data_dir))
    pixels = pad_pixels(pixels_from_images(images), image_size)
    return pixels, torch.from_numpy(labels.astype(np.int64))


def load_reference_images(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real images from an `.npz` file: `pixels` float `[N, C, H, W]` in `[-1, 1]`, optional `labels` int `[N]`."""
    path = Path(path)
    if not path.is_file():
        raise OSError(f"reference images file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        if "pixels" not in data:
            raise ValueError(f"{path} has no 'pixels' array (float [N, C, H, W] in [-1, 1]); it has {sorted(data)}")
        pixels = torch.from_numpy(np.asarray(data["pixels"], dtype=np.float32))
        labels = torch.from_numpy(np.asarray(data["labels"]).astype(np.int64)) if "labels" in data else None
    if pixels.ndim != 4 or pixels.shape[0] < 2:
        raise ValueError(f"{path}: 'pixels' must be [N >= 2, C, H, W], got {tuple(pixels.shape)}")
    if pixels.min() < -1 or pixels.max() > 1:
        raise ValueError(f"{path}: 'pixels' must lie in [-1, 1], got [{float(pixels.min())}, {float(pixels.max())}]")
    if labels is not None and labels.shape != (pixels.shape[0],):
        raise ValueError(f"{path}: 'labels' must be [N={pixels.shape[0]}], got {tuple(labels.shape)}")
    return pixels, labels


def real_subset_indices(labels: torch.Tensor | None, num_classes: int, samples_per_class: int,
                        num_images: int) -> torch.Tensor:
    """Indices of the first `samples_per_class` real images of each class (all classes in `[0, num_classes)`),
    or of the first `num_classes * samples_per_class` images without labels."""
    if labels is None:
        return torch.arange(min(num_images, num_classes * samples_per_class))
    chosen = [torch.nonzero(labels == label).flatten()[:samples_per_class] for label in range(num_classes)]
    return torch.cat(chosen).sort().values


# ---------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------


def load_video_arrays(
    dataset_name: str,
    split: str = "test",
    limit: int | None = None,
    video_column: str | None = None,
    label_column: str | None = "label",
    chunk_size: int = 250,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One split of a video dataset as arrays: videos uint8 `[N, T, H, W, C]` and labels int64 `[N]` (or None).

    Args:
        dataset_name: what [`mgnt_hf.video_io.load_video_dataset`] loads, e.g. a `save_to_disk` folder such as
            `data/moving-fashion-mnist` (a `DatasetDict`; `split` is taken from it).
        split: the split.
        limit: keep only the first `limit` videos.
        video_column: default `"video"`, else the only video/array column.
        label_column: integer class ids; None for unlabelled data (labels then None).
        chunk_size: videos read per slice. `datasets` returns `Array3D` uint8 columns as int64, 8x the memory,
            so the split is read and narrowed to uint8 a slice at a time.

    Every video must have the same shape (they are stacked). Raises `ValueError` for a bad `limit`, missing
    columns or videos of different shapes.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    dataset = load_video_dataset(dataset_name=dataset_name, split=split)
    video_column, label_column = resolve_video_columns(dataset, video_column, label_column)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    import datasets

    videos = []
    is_array = isinstance(dataset.features[video_column], (datasets.Array3D, datasets.Array4D))
    # Array columns come back as one numpy array per slice; files and frame lists as Python values.
    view = dataset.with_format("numpy", columns=[video_column]) if is_array else dataset.select_columns([video_column])
    for start in range(0, len(dataset), chunk_size):
        chunk = view[start : start + chunk_size][video_column]
        videos.extend(decode_video(video, row=start + offset) for offset, video in enumerate(chunk))
    shapes = sorted({video.shape for video in videos})
    if len(shapes) != 1:
        raise ValueError(f"the videos of {dataset_name!r} ({split}) differ in shape {shapes[:5]}; "
                         "load_video_arrays stacks videos of one shape [T, H, W, C]")
    labels = None if label_column is None else np.asarray(dataset[label_column], dtype=np.int64)
    return np.stack(videos), labels


def _unit_float(frames) -> torch.Tensor:
    """uint8 in [0, 255] or float in [0, 1] (numpy or torch) -> float32 torch tensor in [0, 1], same layout."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"expected a numpy array or torch tensor of frames, got {type(frames).__name__}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise ValueError(f"frames must be uint8 in [0, 255] or float in [0, 1], got dtype {frames.dtype}")
    frames = frames.float()
    if frames.numel() and not (torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1):
        raise ValueError(f"float frames must lie in [0, 1], got values in [{float(frames.min()):g}, "
                         f"{float(frames.max()):g}]")
    return frames


def frames_to_pixels(frames) -> torch.Tensor:
    """Frames `[..., H, W, C]` (uint8 in [0, 255] or float in [0, 1]; numpy or torch) -> classifier pixels
    `float32 [M, C, H, W]` in `[-1, 1]`, `M` the product of the leading dimensions (e.g. videos x frames)."""
    if getattr(frames, "ndim", 0) < 4:
        raise ValueError(f"frames must be an array [..., H, W, C] (e.g. videos [N, T, H, W, C]), got "
                         f"{getattr(frames, 'shape', type(frames).__name__)}")
    pixels = _unit_float(frames)
    return pixels.reshape(-1, *pixels.shape[-3:]).permute(0, 3, 1, 2) * 2 - 1


def videos_to_tensor(videos) -> torch.Tensor:
    """Videos `[N, T, H, W, C]` (uint8, or float in [0, 1]; numpy or torch) -> `float32 [N, T, C, H, W]` in [0, 1],
    the pipeline's `output_type="pt"` layout that every video metric takes."""
    if getattr(videos, "ndim", 0) != 5:
        raise ValueError(f"videos must be [N, T, H, W, C], got {getattr(videos, 'shape', type(videos).__name__)}")
    return _unit_float(videos).permute(0, 1, 4, 2, 3)


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------


def resolve_classifier(classifier: str | os.PathLike | None = None, default: str = DEFAULT_CLASSIFIER) -> str:
    """The classifier folder to load: `classifier` (which must hold a `config.json`, else `OSError`), or with
    None the shipped classifier called `default` (`mgnt_hf.shipped`; `OSError` when it is not available)."""
    if classifier is not None:
        if not (Path(classifier) / "config.json").is_file():
            raise OSError(f"no MGNTFeatureClassifier folder at {os.fspath(classifier)!r} (config.json is missing)")
        return os.fspath(classifier)
    try:
        return str(shipped(default))
    except OSError as error:
        raise OSError(f"the default classifier: {error}; pass a classifier folder") from error


def load_classifier(classifier: MGNTFeatureClassifier | str | os.PathLike | None = None,
                    default: str = DEFAULT_CLASSIFIER) -> MGNTFeatureClassifier:
    """`classifier` itself when it is an [`MGNTFeatureClassifier`], else the one [`resolve_classifier`] finds."""
    if isinstance(classifier, MGNTFeatureClassifier):
        return classifier
    return MGNTFeatureClassifier.from_pretrained(resolve_classifier(classifier, default))
