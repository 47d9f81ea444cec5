"""Image-classification data for every training script: loading, checking, transforming, batching.

Typical use (what `training/train_tokenizer.py` and `training/train_mgnt.py` do):

```python
dataset = load_image_dataset(dataset_name="data/fashion-mnist", split="train")   # or train_data_dir=...
image_column, label_column = resolve_columns(dataset, image_column=None, label_column="label")
dataset = check_images(dataset, image_column, skip_bad_images=False)             # before training starts
transform = ImageTransform(num_channels=1, resolution=32, resize_mode="pad")
dataset = with_pixel_transform(dataset, transform, image_column, label_column)    # videos: a VideoTransform
loader = DataLoader(dataset, batch_size=64, shuffle=True, collate_fn=collate_examples)
# batch["pixel_values"]: [B, C, H, W] in [-1, 1]; batch["class_labels"]: [B] long
id2label = id2label_from_dataset(dataset, label_column)
```

Images are decoded here, not by `datasets`: the image column is cast to `Image(decode=False)` so
that every decoding error can name its file (or dataset row) and be reported, or skipped with a
warning, instead of crashing a data-loader worker with PIL's bare message.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps

from .utils.checks import check_choice

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# PIL modes that convert faithfully to "L" or "RGB". Anything else (32-bit integer or float
# pixels, multi-band scientific formats) has no agreed mapping to 8-bit display values.
SUPPORTED_IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I;16", "I;16L",
                         "I;16B")

RESIZE_MODES = ("pad", "resize", "center_crop", "random_crop")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class BadImageError(ValueError):
    """An image that cannot be decoded or has an unsupported mode; the message names its source."""


# ----------------------------------------------------------------------------------------------
# Loading


def load_image_dataset(dataset_name: str | None = None, train_data_dir: str | None = None, split: str = "train",
                       dataset_config_name: str | None = None, cache_dir: str | None = None):
    """Load one split of an image-classification dataset as a `datasets.Dataset`.

    Exactly one source:
      - `dataset_name`: a folder written by `save_to_disk` (a `Dataset` or `DatasetDict`), any other
        local folder `datasets.load_dataset` understands without a loading script (image folders,
        parquet, ...), or a Hub dataset name.
      - `train_data_dir`: an image folder with one subfolder per class (`root/<class>/<image>`, nested
        folders allowed); classes are the sorted subfolder names, labels their indices.

    Raises `ValueError` for a missing/ambiguous source or split, `OSError` for a missing folder.
    """
    import datasets

    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError("give exactly one of dataset_name (HF datasets name or local folder) and train_data_dir "
                         f"(image folder with class subfolders); got dataset_name={dataset_name!r}, "
                         f"train_data_dir={train_data_dir!r}")
    if train_data_dir is not None:
        return load_image_folder(train_data_dir)

    if os.path.isdir(dataset_name) and _is_saved_dataset(dataset_name):
        loaded = datasets.load_from_disk(dataset_name)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in the dataset saved at {dataset_name}; "
                                 f"available splits: {sorted(loaded)}")
            return loaded[split]
        return loaded
    if dataset_name.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(dataset_name)):
        raise OSError(f"dataset folder {dataset_name} does not exist")
    try:
        return datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    except ValueError as error:
        if "split" in str(error).lower():
            raise ValueError(f"split {split!r} not found in dataset {dataset_name!r}: {error}") from error
        raise


def _is_saved_dataset(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, name)) for name in ("dataset_dict.json", "state.json"))


def load_image_folder(root: str):
    """`root/<class>/**/<image>` -> `Dataset` with columns `image` (file paths, `Image` feature) and
    `label` (`ClassLabel` over the sorted class folder names)."""
    import datasets

    root_path = Path(root)
    if not root_path.is_dir():
        raise OSError(f"train_data_dir {root} does not exist or is not a folder")
    class_names = sorted(entry.name for entry in root_path.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise ValueError(f"train_data_dir {root} has no class subfolders; expected {root}/<class name>/<image files>")
    stray = [entry.name for entry in root_path.iterdir() if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS]
    if stray:
        logger.warning("ignoring %d image files directly in %s (not in a class folder), e.g. %s",
                       len(stray), root, stray[0])
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(path for path in (root_path / name).rglob("*")
                       if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"class folder {root_path / name} holds no images (extensions {IMAGE_EXTENSIONS})")
        paths.extend(str(path) for path in files)
        labels.extend([label] * len(files))
    features = datasets.Features({"image": datasets.Image(decode=False),
                                  "label": datasets.ClassLabel(names=class_names)})
    return datasets.Dataset.from_dict({"image": [{"path": p, "bytes": None} for p in paths], "label": labels},
                                      features=features)


def resolve_data_column(dataset, column: str | None, kind: str, feature_types: tuple) -> str:
    """The column holding the `kind` data ("image" or "video"): `column` if given (checked), else the column named
    `kind`, else the only column whose feature is one of `feature_types`; `ValueError` naming the columns."""
    columns = list(dataset.column_names)
    if column is None:
        candidates = [name for name, feature in dataset.features.items() if isinstance(feature, feature_types)]
        if kind in columns:
            column = kind
        elif len(candidates) == 1:
            column = candidates[0]
        else:
            raise ValueError(f"cannot tell which column holds the {kind}s (columns: {columns}); pass --{kind}_column")
    if column not in columns:
        raise ValueError(f"{kind} column {column!r} not in the dataset; available columns: {columns}")
    return column


def resolve_columns(dataset, image_column: str | None = None, label_column: str | None = None,
                    require_label: bool = False) -> tuple[str, str | None]:
    """Check (or guess) the image and label columns; `ValueError` naming the available columns if missing.

    `image_column=None` picks `"image"`, else the only column with an `Image` feature.
    `label_column=None` means no labels unless `require_label` (then `"label"` is tried).
    """
    import datasets

    columns = list(dataset.column_names)
    image_column = resolve_data_column(dataset, image_column, "image", (datasets.Image,))
    if label_column is None and require_label:
        label_column = "label"
    if label_column is not None and label_column not in columns:
        raise ValueError(f"label column {label_column!r} not in the dataset; available columns: {columns}")
    return image_column, label_column


def id2label_from_dataset(dataset, label_column: str) -> dict[int, str]:
    """`{id: name}` from a `ClassLabel` label column; for plain integer labels `{i: str(i)}` for
    `i in range(max + 1)`. `ValueError` for labels that are neither."""
    import datasets

    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return dict(enumerate(feature.names))
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        labels = dataset.with_format("numpy")[label_column]
        if len(labels) and int(np.min(labels)) < 0:
            raise ValueError(f"label column {label_column!r} has negative labels (min {int(np.min(labels))})")
        return {i: str(i) for i in range(int(np.max(labels)) + 1 if len(labels) else 0)}
    raise ValueError(f"label column {label_column!r} has feature {feature}; expected ClassLabel or integers")


# ----------------------------------------------------------------------------------------------
# Decoding and checking


def _describe(value, row: int | None = None) -> str:
    path = value.get("path") if isinstance(value, dict) else None
    if path:
        return f"image file {path}"
    return f"image at row {row}" if row is not None else "an image without a file path"


def decode_image(value, row: int | None = None) -> Image.Image:
    """Decode one undecoded `datasets` image value (`{"path", "bytes"}`), a path or a PIL image.

    Raises `BadImageError` naming the file (or row) when it cannot be read or has an unsupported mode.
    """
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict):
            if value.get("bytes") is not None:
                image = Image.open(io.BytesIO(value["bytes"]))
            elif value.get("path"):
                image = Image.open(value["path"])
            else:
                raise BadImageError(f"{_describe(value, row)} has neither bytes nor a path")
        elif isinstance(value, (str, os.PathLike)):
            image = Image.open(value)
            value = {"path": str(value)}
        else:
            raise BadImageError(f"{_describe(value, row)}: unsupported value of type {type(value).__name__}")
        image.load()  # decode now: truncated or corrupt data fails here, not later in a worker
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(f"cannot read {_describe(value, row)}: {error}") from error
    if image.mode not in SUPPORTED_IMAGE_MODES:
        raise BadImageError(f"{_describe(value, row)} has unsupported mode {image.mode!r} "
                            f"({len(image.getbands())} channels); supported modes: {SUPPORTED_IMAGE_MODES}")
    return image


def check_images(dataset, image_column: str, skip_bad_images: bool = False, num_proc: int | None = None,
                 max_reported: int = 10):
    """Decode every image once before training; return the dataset (without bad rows if skipping).

    Bad images (unreadable, truncated, unsupported mode) raise `ValueError` listing up to
    `max_reported` of them, or with `skip_bad_images` are dropped with a logged warning each. The
    image column comes back undecoded (`Image(decode=False)`), ready for `with_pixel_transform`.
    """
    dataset = _undecoded(dataset, image_column)

    def reason(value, row: int) -> str:
        try:
            decode_image(value, row)
            return ""
        except BadImageError as error:
            return str(error)

    return drop_or_report_bad_rows(dataset, image_column, reason, kind="image", skip_bad=skip_bad_images,
                                   skip_flag="--skip_bad_images", num_proc=num_proc, max_reported=max_reported)


def drop_or_report_bad_rows(dataset, column: str, reason, kind: str, skip_bad: bool, skip_flag: str,
                            num_proc: int | None = None, max_reported: int = 10, batch_size: int = 256,
                            error_type: type[ValueError] = ValueError):
    """Run `reason(value, row) -> str` ("" when the row is fine) over every value of `column` once (datasets
    `.map`, optionally in `num_proc` processes). Bad rows raise `error_type` listing up to `max_reported` reasons
    (mentioning `skip_flag`), or with `skip_bad` are dropped with a logged warning each."""

    def find_bad(batch, indices):
        return {"bad_row_reason": [reason(value, row) for value, row in zip(batch[column], indices)]}

    reasons = dataset.map(find_bad, batched=True, with_indices=True, batch_size=batch_size, num_proc=num_proc,
                          remove_columns=dataset.column_names, keep_in_memory=True,
                          desc=f"checking {kind}s")["bad_row_reason"]
    bad_rows = [row for row, text in enumerate(reasons) if text]
    if not bad_rows:
        return dataset
    if not skip_bad:
        listed = "\n  ".join(reasons[row] for row in bad_rows[:max_reported])
        more = f"\n  ... and {len(bad_rows) - max_reported} more" if len(bad_rows) > max_reported else ""
        raise error_type(f"{len(bad_rows)} bad {kind}(s) in the dataset (pass {skip_flag} to skip them):\n  "
                         f"{listed}{more}")
    for row in bad_rows:
        logger.warning("skipping bad %s: %s", kind, reasons[row])
    bad = set(bad_rows)
    kept = [row for row in range(len(dataset)) if row not in bad]
    if not kept:
        raise error_type(f"all {len(dataset)} {kind}s are bad; nothing to train on")
    return dataset.select(kept)


def _undecoded(dataset, image_column: str):
    import datasets

    feature = dataset.features[image_column]
    if isinstance(feature, datasets.Image):
        if feature.decode:
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        return dataset
    raise ValueError(f"column {image_column!r} has feature {feature}, not an Image; pass the right --image_column")


# ----------------------------------------------------------------------------------------------
# Transforms


@dataclass
class ImageTransform:
    """PIL image -> `[C, H, W]` float tensor in `[-1, 1]`.

    Args:
        num_channels: 1 converts to grayscale ("L"), 3 to RGB (alpha dropped, palette expanded,
            16-bit grayscale scaled to 8 bits).
        resolution: output `(H, W)` (an int means square).
        resize_mode: `"pad"`: centre the image on a background of `pad_value` (images larger than
            the resolution raise `BadImageError`; Fashion-MNIST 28 -> 32); `"resize"`: bicubic resize to
            exactly the resolution; `"center_crop"`: resize the shorter side to the resolution, then
            crop the centre (MaskGIT's ImageNet preprocessing); `"random_crop"`: as center_crop but at
            a random offset.
        random_flip: flip horizontally with probability 1/2.
        pad_value: 8-bit background value for `"pad"` (0 = black, which maps to -1).
    """

    num_channels: int = 3
    resolution: int | tuple[int, int] = 256
    resize_mode: str = "center_crop"
    random_flip: bool = False
    pad_value: int = 0

    def __post_init__(self):
        if self.num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {self.num_channels!r}")
        resolution = self.resolution
        self.resolution = tuple(resolution) if isinstance(resolution, (list, tuple)) else (resolution, resolution)
        if len(self.resolution) != 2 or not all(isinstance(s, int) and s > 0 for s in self.resolution):
            raise ValueError(f"resolution must be a positive int or (H, W), got {resolution!r}")
        check_choice("resize_mode", self.resize_mode, RESIZE_MODES)
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be an 8-bit value in [0, 255], got {self.pad_value!r}")

    def to_mode(self, image: Image.Image) -> Image.Image:
        if image.mode.startswith("I;16"):
            # PIL's convert("L") clips 16-bit values at 255; scale to 8 bits first.
            array = np.asarray(image, dtype=np.uint16) // 257
            image = Image.fromarray(array.astype(np.uint8), mode="L")
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        return image.convert("L" if self.num_channels == 1 else "RGB")

    def resize(self, image: Image.Image) -> Image.Image:
        height, width = self.resolution
        if self.resize_mode == "pad":
            if image.width > width or image.height > height:
                raise BadImageError(f"image of size {image.width}x{image.height} is larger than the resolution "
                                    f"{width}x{height}; use resize_mode 'resize' or 'center_crop' instead of 'pad'")
            canvas = Image.new(image.mode, (width, height), self.pad_value if image.mode == "L" else (self.pad_value,) * 3)
            canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
            return canvas
        if self.resize_mode == "resize":
            return image.resize((width, height), Image.Resampling.BICUBIC)
        scale = max(height / image.height, width / image.width)
        new_size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.BICUBIC)
        if self.resize_mode == "center_crop":
            left, top = (image.width - width) // 2, (image.height - height) // 2
        else:
            left = int(torch.randint(0, image.width - width + 1, ()).item())
            top = int(torch.randint(0, image.height - height + 1, ()).item())
        return image.crop((left, top, left + width, top + height))

    # What `with_pixel_transform` and `check_images` need to read a dataset column (shared with VideoTransform).
    kind: ClassVar[str] = "image"
    bad_value_errors: ClassVar[tuple[type[Exception], ...]] = (BadImageError,)

    @staticmethod
    def prepare_column(dataset, column: str):
        """The dataset with its image column undecoded (`Image(decode=False)`); `ValueError` if it is no image."""
        return _undecoded(dataset, column)

    def load(self, value) -> torch.Tensor:
        """One stored image (a `datasets` value, a path or a PIL image) -> `[C, H, W]`."""
        return self(decode_image(value))

    @staticmethod
    def describe(value, row: int | None = None) -> str:
        """How messages name a stored image: its file, else its row."""
        return _describe(value, row)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = self.resize(self.to_mode(image))
        if self.random_flip and bool(torch.rand(()) < 0.5):
            image = ImageOps.mirror(image)
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def with_pixel_transform(dataset, transform, column: str, label_column: str | None = None, skip_bad: bool = False):
    """The dataset, reading and transforming images or videos on access: rows become
    `{"pixel_values": tensor, "class_labels": int}` (no labels without `label_column`).

    `transform` is an `ImageTransform` (`pixel_values` `[C, H, W]`) or a `mgnt_hf.video_io.VideoTransform`
    (`[C, T, H, W]`): it says how `column` is read (`prepare_column`, `load`) and which errors mean a bad value.
    A bad value raises (`BadImageError` naming its file; `BadVideoError`, or `OSError` for a missing video file);
    with `skip_bad` its row becomes `None`, which `collate_examples` drops with a warning (run `check_images` or
    `check_videos` first to avoid both).
    """
    dataset = transform.prepare_column(dataset, column)

    def apply(batch):
        pixel_values = []
        for value in batch[column]:
            try:
                pixel_values.append(transform.load(value))
            except transform.bad_value_errors as error:
                if not skip_bad:
                    raise
                described = transform.describe(value)
                logger.warning("skipping bad %s: %s", transform.kind,
                               error if described in str(error) else f"{described}: {error}")
                pixel_values.append(None)
        output = {"pixel_values": pixel_values}
        if label_column is not None:
            output["class_labels"] = list(batch[label_column])
        return output

    return dataset.with_transform(apply)


def collate_examples(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack `pixel_values` to `[B, C, H, W]` (images) or `[B, C, T, H, W]` (videos), and `class_labels` to `[B]`
    long; rows skipped as bad (`pixel_values` None) are dropped with a warning."""
    kept = [example for example in examples if example["pixel_values"] is not None]
    if len(kept) < len(examples):
        logger.warning("dropped %d bad example(s) from a batch of %d", len(examples) - len(kept), len(examples))
    if not kept:
        raise ValueError(f"every example of a batch of {len(examples)} was bad; run check_images (or check_videos) "
                         f"before training")
    batch = {"pixel_values": torch.stack([example["pixel_values"] for example in kept])}
    if "class_labels" in kept[0]:
        batch["class_labels"] = torch.tensor([int(example["class_labels"]) for example in kept], dtype=torch.long)
    return batch


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed): unsigned-byte data of any rank, e.g.
    `[N, 28, 28]` images or `[N]` labels. `OSError` if missing, `ValueError` if malformed."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OSError(f"IDX file {path} does not exist")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    type_code, rank = data[2], data[3]
    if type_code != 0x08:
        raise ValueError(f"{path}: IDX element type 0x{type_code:02x} not supported (only unsigned bytes, 0x08)")
    header = 4 + 4 * rank
    shape = struct.unpack(f">{rank}I", data[4:header])
    expected = int(np.prod(shape)) if rank else 1
    if len(data) - header != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but {len(data) - header} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_fashion_mnist(split: str, directory: str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """`(images [N, 28, 28] uint8, labels [N] uint8)` of the Fashion-MNIST `train` (60k) or `test` (10k) split."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(FASHION_MNIST_FILES)}, got {split!r}")
    paths = [os.path.join(directory, name) for name in FASHION_MNIST_FILES[split]]
    for path in paths:
        if not os.path.isfile(path):
            raise OSError(f"Fashion-MNIST file {path} not found; install the Debian package dataset-fashion-mnist "
                          f"(apt-get install dataset-fashion-mnist) or pass the folder holding the IDX files")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels
