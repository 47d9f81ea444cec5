"""Video data for the training scripts: loading, decoding, checking, transforming.

The video counterpart of `mgnt_hf.data` (same conventions, and its image helpers are reused for
single frames; batching is `mgnt_hf.data`'s, for images and videos alike). Writing video files is
`mgnt_hf.video_utils.write_video`. Typical use (what `training/train_tokenizer.py` and `training/train_mgnt.py` do
for video data):

```python
dataset = load_video_dataset(dataset_name="data/moving-fashion-mnist", split="train")  # or train_data_dir=...
video_column, label_column = resolve_video_columns(dataset, video_column=None, label_column="label")
transform = VideoTransform(num_frames=16, num_channels=1, resolution=32, resize_mode="pad")
dataset = check_videos(dataset, video_column, transform)                               # before training starts
dataset = with_pixel_transform(dataset, transform, video_column, label_column)        # from mgnt_hf.data
loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=collate_examples)  # from mgnt_hf.data
# batch["pixel_values"]: [B, C, T, H, W] in [-1, 1]; batch["class_labels"]: [B] long
```

A video may be stored as an array (`Array3D` `[T, H, W]` / `Array4D` `[T, H, W, C]` uint8 columns,
what `mgnt_hf.moving_fashion_mnist` writes), as a path to a video file or to a folder of frame
images, or as a `datasets.Video` value (`{"path", "bytes"}`). Files are decoded with PyAV (the
`video` extra), not by `datasets` (whose `Video` feature needs torchcodec): `Video` columns are
cast to `Video(decode=False)` so that every decoding error can name its file or row.

UCF101 (class-conditional generation)
    Unpack the official `UCF101.rar` (https://www.crcv.ucf.edu/data/UCF101.php) so that the clips
    lie in `UCF-101/<class>/v_<class>_gXX_cXX.avi` (101 class folders, 13,320 clips) and load it
    as a class-folder tree; the labels are the sorted class names:

        dataset = load_video_dataset(train_data_dir="UCF-101")

    For an official train/test split (e.g. `ucfTrainTestlist/trainlist01.txt`), keep the listed
    clips with `select_listed_clips(dataset, "ucfTrainTestlist/trainlist01.txt")`. A Hub copy of
    UCF101 with a `Video` column loads with `load_video_dataset(dataset_name="<user>/<repo>")`.

Kinetics-600 (frame prediction)
    Arrange the downloaded clips as `<root>/<class>/<clip>.mp4` (the annotation CSVs give each
    clip's class) and load them with `load_video_dataset(train_data_dir="<root>/train")`; a flat
    folder of clips (`<root>/train/*.mp4`, no class folders) also loads, without labels, which
    frame prediction does not need. Clips stored as folders of extracted frames
    (`<class>/<clip>/00001.jpg ...`) load the same way as video files.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from .data import BadImageError, ImageTransform, decode_image, drop_or_report_bad_rows, load_image_dataset, \
    resolve_columns, resolve_data_column
from .utils.checks import check_choice, check_positive_int
from .video_utils import BadVideoError, as_uint8_video, import_av, stack_frames, video_frames

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CLIP_STARTS = ("start", "center")


# ----------------------------------------------------------------------------------------------
# Loading


def load_video_dataset(dataset_name: str | None = None, train_data_dir: str | None = None, split: str = "train",
                       dataset_config_name: str | None = None, cache_dir: str | None = None,
                       video_column: str | None = None):
    """Load one split of a video dataset as a `datasets.Dataset`.

    Exactly one source:
      - `dataset_name`: a folder written by `save_to_disk` (a `Dataset`, or a `DatasetDict` of
        which `split` is taken), or a name/path `datasets.load_dataset` understands (a Hub dataset,
        a local `videofolder`...).
      - `train_data_dir`: a clip folder, see `load_video_folder`.

    `datasets.Video` columns (`video_column`, or every one when it is None) come back as
    `Video(decode=False)`: `{"path", "bytes"}` values that `decode_video` reads with PyAV.

    Raises `ValueError` for a missing/ambiguous source, a missing split (listing the available
    ones) or a missing `video_column`; `OSError` for a missing folder.
    """
    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError("give exactly one of dataset_name (HF datasets name or local folder) and train_data_dir "
                         f"(clip folder with class subfolders); got dataset_name={dataset_name!r}, "
                         f"train_data_dir={train_data_dir!r}")
    if train_data_dir is not None:
        dataset = load_video_folder(train_data_dir)
    else:  # saved datasets, splits and Hub names load exactly as for images
        dataset = load_image_dataset(dataset_name, split=split, dataset_config_name=dataset_config_name,
                                     cache_dir=cache_dir)
    if video_column is not None and video_column not in dataset.column_names:
        raise ValueError(f"video column {video_column!r} not in the dataset; available columns: {dataset.column_names}")
    for name in [video_column] if video_column is not None else list(dataset.column_names):
        dataset = _undecoded_videos(dataset, name)
    return dataset


def load_video_folder(root: str):
    """A clip folder -> `Dataset` with column `video` (path strings) and, with class folders, `label`.

    Layouts:
      - `root/<class>/<clip>`: each clip is a video file (`VIDEO_EXTENSIONS`) or a folder of frame
        images (`FRAME_EXTENSIONS`), at any depth below the class folder; `label` is a
        `ClassLabel` over the sorted class folder names (label = index).
      - `root/<clip file>` with no class folders: the clips only, no `label` column.

    Raises `OSError` for a missing folder, `ValueError` when there are no clips (or a class folder
    holds none).
    """
    import datasets

    root_path = Path(root)
    if not root_path.is_dir():
        raise OSError(f"train_data_dir {root} does not exist or is not a folder")
    entries = sorted(root_path.iterdir(), key=lambda path: _natural_key(path.name))
    class_folders = [entry for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    loose_videos = [entry for entry in entries if _is_video_file(entry)]
    if not class_folders:
        if not loose_videos:
            raise ValueError(f"train_data_dir {root} holds no clips; expected {root}/<class name>/<clip> (a video "
                             f"file {VIDEO_EXTENSIONS} or a folder of frames {FRAME_EXTENSIONS}) or video files")
        return datasets.Dataset.from_dict({"video": [str(path) for path in loose_videos]},
                                          features=datasets.Features({"video": datasets.Value("string")}))
    if loose_videos:
        logger.warning("ignoring %d video files directly in %s (not in a class folder), e.g. %s",
                       len(loose_videos), root, loose_videos[0].name)
    class_names = [folder.name for folder in class_folders]
    paths, labels = [], []
    for label, folder in enumerate(class_folders):
        clips = _find_clips(folder)
        if not clips:
            raise ValueError(f"class folder {folder} holds no clips (video files {VIDEO_EXTENSIONS} or folders of "
                             f"frame images {FRAME_EXTENSIONS})")
        paths.extend(str(path) for path in clips)
        labels.extend([label] * len(clips))
    features = datasets.Features({"video": datasets.Value("string"), "label": datasets.ClassLabel(names=class_names)})
    return datasets.Dataset.from_dict({"video": paths, "label": labels}, features=features)


def _find_clips(class_folder: Path) -> list[Path]:
    """Video files and frame folders below `class_folder`, in natural order of their relative paths."""
    clips = []
    loose_frames = 0
    for directory, subdirectories, files in os.walk(class_folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        directory = Path(directory)
        clips.extend(directory / name for name in files if _is_video_file(directory / name))
        num_frames = sum(Path(name).suffix.lower() in FRAME_EXTENSIONS for name in files)
        if num_frames and directory == class_folder:
            loose_frames += num_frames
        elif num_frames:
            clips.append(directory)
    if loose_frames:
        logger.warning("ignoring %d frame images directly in class folder %s (a frame clip is a folder of frames)",
                       loose_frames, class_folder)
    return sorted(clips, key=lambda path: _natural_key(str(path.relative_to(class_folder))))


def _is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def _natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: frame2 < frame10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def select_listed_clips(dataset, list_file: str, video_column: str = "video", allow_missing: bool = False):
    """Keep the rows whose clip is named in a split list such as UCF101's `trainlist01.txt`.

    Each non-empty line starts with a clip path (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi`,
    optionally followed by a label); rows match on the clip's file name, because UCF101's lists
    spell some class folders differently from the archive (`HandStandPushups` vs
    `HandstandPushups`). `ValueError` when listed clips are missing from the dataset, unless
    `allow_missing`.
    """
    if not os.path.isfile(list_file):
        raise OSError(f"clip list {list_file} does not exist")
    with open(list_file) as handle:
        listed = {Path(line.split()[0].replace("\\", "/")).name for line in handle if line.strip()}
    if not listed:
        raise ValueError(f"clip list {list_file} names no clips")
    values = dataset[video_column]
    if not all(isinstance(value, (str, dict)) for value in values):
        raise ValueError(f"select_listed_clips needs clip paths in column {video_column!r} (a clip folder or a "
                         f"Video column), got {dataset.features[video_column]}")
    names = [Path(value["path"] if isinstance(value, dict) else str(value)).name for value in values]
    missing = listed - set(names)
    if missing and not allow_missing:
        examples = ", ".join(sorted(missing)[:5])
        raise ValueError(f"{len(missing)} of the {len(listed)} clips listed in {list_file} are not in the dataset "
                         f"(e.g. {examples}); pass allow_missing=True to keep the ones present")
    return dataset.select([row for row, name in enumerate(names) if name in listed])


def resolve_video_columns(dataset, video_column: str | None = None, label_column: str | None = None,
                          require_label: bool = False) -> tuple[str, str | None]:
    """Check (or guess) the video and label columns; `ValueError` naming the available columns if missing.

    `video_column=None` picks `"video"`, else the only column with a `Video`, `Array3D` or
    `Array4D` feature. Labels as in `mgnt_hf.data.resolve_columns`.
    """
    import datasets

    video_column = resolve_data_column(dataset, video_column, "video",
                                       (datasets.Video, datasets.Array3D, datasets.Array4D))
    return resolve_columns(dataset, video_column, label_column, require_label)


def _undecoded_videos(dataset, video_column: str):
    """The dataset with a `Video` column cast to `Video(decode=False)` (decoding would need torchcodec)."""
    import datasets

    feature = dataset.features[video_column]
    if isinstance(feature, datasets.Video) and feature.decode:
        dataset = dataset.cast_column(video_column, datasets.Video(decode=False))
    return dataset


# ----------------------------------------------------------------------------------------------
# Decoding


def _describe(value, row: int | None = None) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, os.PathLike)) else None
    where = f" (row {row})" if row is not None and path else ""
    if path:
        kind = "frame folder" if os.path.isdir(path) else "video file"
        return f"{kind} {os.fspath(path)}{where}"
    return f"video at row {row}" if row is not None else "a video without a file path"


def decode_video(value, row: int | None = None) -> np.ndarray:
    """Decode one stored video to uint8 frames `[T, H, W, C]`, C = 1 (grayscale) or 3 (RGB) as stored.

    Accepts:
      - an array `[T, H, W]` (grayscale) or `[T, H, W, C]` with C in (1, 3): uint8 or other
        integers in [0, 255], or floats in [0, 1]; a `torch.Tensor` the same; nested lists (what
        `datasets` returns for `Array3D`/`Array4D` columns) or a list of frame arrays;
      - a list of PIL images (all grayscale -> C=1, else RGB);
      - a path to a video file (decoded with PyAV) or to a folder of frame images (natural order:
        2.png before 10.png);
      - a `datasets` video value `{"path", "bytes"}` (the bytes, when present, are decoded in memory).

    Raises `BadVideoError` naming the file (or row) and the reason when the value cannot be read,
    `OSError` when a path does not exist.
    """
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return _decode_with_pyav(io.BytesIO(value["bytes"]), _describe(value, row))
        if not value.get("path"):
            raise BadVideoError(f"{_describe(value, row)} has neither bytes nor a path")
        value = value["path"]
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if os.path.isdir(path):
            return _decode_frame_folder(path, _describe(path, row))
        if not os.path.isfile(path):
            raise OSError(f"{_describe(path, row)} does not exist")
        return _decode_with_pyav(path, _describe(path, row))
    return video_frames(value, _describe(value, row))


def _decode_frame_folder(folder: str, description: str) -> np.ndarray:
    names = sorted((name for name in os.listdir(folder)
                    if Path(name).suffix.lower() in FRAME_EXTENSIONS and os.path.isfile(os.path.join(folder, name))),
                   key=_natural_key)
    if not names:
        raise BadVideoError(f"{description} holds no frame images ({FRAME_EXTENSIONS})")
    frames = []
    for name in names:
        try:
            frames.append(decode_image(os.path.join(folder, name)))
        except BadImageError as error:
            raise BadVideoError(f"{description}: bad frame: {error}") from error
    return stack_frames(frames, description)


def _decode_with_pyav(source, description: str) -> np.ndarray:
    """Every frame of the first video stream of a file path or `BytesIO`; grayscale pixel formats keep C=1."""
    av = import_av()
    frames = []
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.video:
                raise BadVideoError(f"{description} has no video stream")
            stream = container.streams.video[0]
            output_format = None
            for frame in container.decode(stream):
                if output_format is None:
                    output_format = "gray" if frame.format.name.startswith(("gray", "ya")) else "rgb24"
                frames.append(frame.to_ndarray(format=output_format))
    except BadVideoError:
        raise
    except (av.FFmpegError, ValueError, EOFError) as error:
        raise BadVideoError(f"cannot read {description}: {error}") from error
    if not frames:
        raise BadVideoError(f"{description} has no decodable frames")
    if len({frame.shape for frame in frames}) > 1:
        sizes = sorted({frame.shape for frame in frames})
        raise BadVideoError(f"{description}: frame size changes within the video: {sizes}")
    return as_uint8_video(np.stack(frames), description)


# ----------------------------------------------------------------------------------------------
# Transform and checking


@dataclass
class VideoTransform:
    """A stored video -> `[C, T, H, W]` float tensor in `[-1, 1]`: a clip of `num_frames` frames.

    Args:
        num_frames: frames in the clip (T).
        num_channels: 1 converts to grayscale, 3 to RGB (as `ImageTransform` does per frame).
        resolution: output `(H, W)` (an int means square).
        resize_mode: per frame, as `ImageTransform` (`RESIZE_MODES`); `"random_crop"` draws one
            offset per clip, so every frame is cropped at the same place.
        frame_stride: take every `frame_stride`-th frame; the clip spans
            `(num_frames - 1) * frame_stride + 1` source frames.
        clip_start: where that span starts: `"start"` (frame 0) or `"center"` (centred, rounding
            down). Deterministic, so a token cache of the clips stays valid.
        random_flip: flip the whole clip horizontally with probability 1/2.
        pad_value: 8-bit background value for `"pad"`.

    A video shorter than the span raises `BadVideoError` (a `ValueError`) naming its shape and the
    number of frames needed.
    """

    num_frames: int
    num_channels: int
    resolution: int | tuple[int, int]
    resize_mode: str = "center_crop"
    frame_stride: int = 1
    clip_start: str = "start"
    random_flip: bool = False
    pad_value: int = 0

    def __post_init__(self):
        self.num_frames = check_positive_int("num_frames", self.num_frames)
        self.frame_stride = check_positive_int("frame_stride", self.frame_stride)
        check_choice("clip_start", self.clip_start, CLIP_STARTS)
        # Validates num_channels, resolution, resize_mode and pad_value with ImageTransform's messages.
        self.frame_transform = ImageTransform(self.num_channels, self.resolution, self.resize_mode,
                                              random_flip=False, pad_value=self.pad_value)
        self.resolution = self.frame_transform.resolution

    @property
    def span(self) -> int:
        """Source frames covered by one clip: `(num_frames - 1) * frame_stride + 1`."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def frame_indices(self, total_frames: int) -> list[int]:
        """Indices of the source frames the clip takes from a video of `total_frames` frames."""
        start = 0 if self.clip_start == "start" else (total_frames - self.span) // 2
        return list(range(start, start + self.span, self.frame_stride))

    # What `mgnt_hf.data.with_pixel_transform` and `check_videos` need to read a dataset column (as ImageTransform).
    kind: ClassVar[str] = "video"
    bad_value_errors: ClassVar[tuple[type[Exception], ...]] = (BadVideoError, OSError)

    @staticmethod
    def prepare_column(dataset, column: str):
        """The dataset with a `Video` column undecoded (`Video(decode=False)`); other columns as they are."""
        return _undecoded_videos(dataset, column)

    def load(self, value) -> torch.Tensor:
        """One stored video (anything `decode_video` reads) -> `[C, T, H, W]`."""
        return self(value)

    @staticmethod
    def describe(value, row: int | None = None) -> str:
        """How messages name a stored video: its file or frame folder (and row), else its row."""
        return _describe(value, row)

    def __call__(self, value) -> torch.Tensor:
        video = decode_video(value)  # [T, H, W, C] uint8
        if video.shape[0] < self.span:
            raise BadVideoError(f"video has {video.shape[0]} frames {list(video.shape)}; need at least {self.span} "
                                f"(num_frames={self.num_frames}, frame_stride={self.frame_stride})")
        frames = video[self.frame_indices(video.shape[0])]
        if frames.shape[-1] == 1:
            frames = frames[..., 0]  # [T, H, W]: PIL reads 2-D uint8 as "L", [H, W, 3] as "RGB"
        # One random-crop offset per clip: every frame draws from the same generator state.
        rng_state = torch.get_rng_state()
        outputs = []
        try:
            for frame in frames:
                torch.set_rng_state(rng_state)
                outputs.append(self.frame_transform(Image.fromarray(frame)))
        except BadImageError as error:
            raise BadVideoError(f"video frames {list(video.shape[1:])}: {error}") from error
        clip = torch.stack(outputs, dim=1)  # [C, T, H, W]
        if self.random_flip and bool(torch.rand(()) < 0.5):
            clip = clip.flip(-1)
        return clip


def check_videos(dataset, video_column: str, transform: VideoTransform, skip_bad_videos: bool = False,
                 num_proc: int | None = None, max_reported: int = 10):
    """Decode and transform every video once before training; return the dataset (without bad rows if skipping).

    Bad videos (unreadable, wrong shape, fewer frames than `transform` needs, missing files)
    raise `BadVideoError` listing up to `max_reported` of them by row and file, or with
    `skip_bad_videos` are dropped with a logged warning each. A `Video` column comes back as
    `Video(decode=False)`, ready for `mgnt_hf.data.with_pixel_transform`.
    """
    dataset = _undecoded_videos(dataset, video_column)

    def reason(value, row: int) -> str:
        try:
            transform(decode_video(value, row))
            return ""
        except (BadVideoError, OSError) as error:
            described = _describe(value, row)
            return str(error) if described in str(error) else f"{described}: {error}"

    return drop_or_report_bad_rows(dataset, video_column, reason, kind="video", skip_bad=skip_bad_videos,
                                   skip_flag="--skip_bad_videos (--skip_bad_images in the training scripts)",
                                   num_proc=num_proc, max_reported=max_reported, batch_size=16,
                                   error_type=BadVideoError)
