"""Video files from frames: `write_video` and `export_to_video` (one video of a pipeline output).

Shared by the video pipeline, the command line and the video data module (`mgnt_hf.video_io`, which reads
videos back and turns them into training clips): `video_frames` brings frames held in memory (arrays, tensors,
lists of PIL frames) to uint8 `[T, H, W, C]`, and `BadVideoError` is what every video reader and writer raises
for frames that are not a video.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import ImageTransform
from .utils.checks import check_finite_number

# Extension -> (PyAV encoder, pixel format; None = gray or RGB as given). FFV1 in .mkv is lossless.
VIDEO_WRITERS = {
    ".mp4": ("libx264", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".mkv": ("ffv1", None),
}
WRITE_EXTENSIONS = (".gif", *VIDEO_WRITERS)
# High quality for the lossy encoders: x264's CRF 18 is "visually lossless", VP9 in constant-quality
# mode (b=0), MPEG-4 at fixed quantiser 2 (ffmpeg's `-q:v 2`; its default 200 kb/s smears small clips).
ENCODER_OPTIONS = {"libx264": {"crf": "18"}, "libvpx-vp9": {"crf": "20", "b": "0"},
                   "mpeg4": {"flags": "+qscale", "global_quality": "236"}}


class BadVideoError(ValueError):
    """A video that cannot be decoded, has an unsupported shape or is too short; the message names its source."""


def video_frames(value, description: str = "a video without a file path") -> np.ndarray:
    """Frames held in memory -> uint8 `[T, H, W, C]`, C = 1 (grayscale) or 3 (RGB) as given.

    Accepts an array `[T, H, W]` or `[T, H, W, C]` with C in (1, 3) (uint8, other integers in [0, 255] or floats
    in [0, 1]), a `torch.Tensor` the same, nested lists or a list of frame arrays, or a list of PIL images (all
    grayscale -> C=1, else RGB). Raises `BadVideoError` starting with `description` for anything else.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], Image.Image):
        return stack_frames(list(value), description)
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            array = np.asarray(value)
        except ValueError as error:  # ragged nested lists: frames of different sizes
            raise BadVideoError(f"{description}: frames do not form one array: {error}") from error
        return as_uint8_video(array, description)
    raise BadVideoError(f"{description}: unsupported value of type {type(value).__name__}; expected an "
                        "array, a list of frames, a path or a {'path', 'bytes'} dict")


def as_uint8_video(array: np.ndarray, description: str) -> np.ndarray:
    """Array `[T, H, W]` / `[T, H, W, C]` -> uint8 `[T, H, W, C]`; integers must be 8-bit values, floats in [0, 1]."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise BadVideoError(f"{description}: expected frames [T, H, W] or [T, H, W, C] with C in (1, 3), got shape "
                            f"{list(array.shape)}")
    if 0 in array.shape:
        raise BadVideoError(f"{description} is empty (shape {list(array.shape)})")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise BadVideoError(f"{description}: integer pixels must be 8-bit values in [0, 255], got [{low}, {high}]")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if not (0.0 <= low and high <= 1.0):  # also rejects NaN
            raise BadVideoError(f"{description}: float pixels must be in [0, 1], got [{low}, {high}]")
        return np.round(array * 255.0).astype(np.uint8)
    raise BadVideoError(f"{description}: unsupported pixel dtype {array.dtype}; expected uint8, 8-bit integers or "
                        "floats in [0, 1]")


def stack_frames(images: list, description: str) -> np.ndarray:
    """PIL frames -> uint8 `[T, H, W, C]`: C=1 when every frame is grayscale, else RGB."""
    if not all(isinstance(image, Image.Image) for image in images):
        raise BadVideoError(f"{description}: a list of frames must hold only PIL images or only arrays")
    grayscale = all(image.mode in ("1", "L", "I;16", "I;16L", "I;16B") for image in images)
    # ImageTransform.to_mode converts faithfully (16-bit gray scaled, palettes expanded); size is unused here.
    to_mode = ImageTransform(num_channels=1 if grayscale else 3, resolution=1).to_mode
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        raise BadVideoError(f"{description}: frames have different sizes (width, height): {sorted(sizes)}")
    try:
        frames = [np.asarray(to_mode(image)) for image in images]
    except (OSError, ValueError) as error:
        raise BadVideoError(f"cannot convert the frames of {description}: {error}") from error
    return as_uint8_video(np.stack(frames), description)


def import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError("reading and writing video files needs PyAV: pip install 'mgnt_hf[video]' "
                          "(or: pip install av)") from error
    return av


def write_video(frames, path: str | os.PathLike, fps: float = 8) -> str:
    """Write frames to a video file; returns the path.

    Args:
        frames: uint8 `[T, H, W, C]` (C = 1 or 3) or `[T, H, W]`, or anything `video_frames`
            accepts (float frames in [0, 1], a list of PIL images or of arrays).
        path: `.gif` (Pillow, looping, 256 colours per frame; Pillow merges runs of identical
            consecutive frames into one longer frame, so those read back as fewer frames), `.mp4`
            (H.264, yuv420p), `.webm` (VP9, yuv420p), `.avi` (MPEG-4 part 2, yuv420p) or `.mkv`
            (FFV1, lossless, grayscale kept as one channel). The yuv420p formats need an even
            height and width; grayscale frames are written as RGB there.
        fps: frames per second (GIF stores frame durations in 1/100 s).

    Raises `ValueError` for an unsupported extension, a bad fps, odd sizes for yuv420p or frames
    that are not a video.
    """
    path = os.fspath(path)
    extension = Path(path).suffix.lower()
    if extension not in WRITE_EXTENSIONS:
        raise ValueError(f"cannot write video {path}: extension {extension!r} not supported; use one of "
                         f"{WRITE_EXTENSIONS}")
    check_finite_number("fps", fps, minimum=0, exclusive_minimum=True)
    if isinstance(frames, (str, os.PathLike, dict)):
        raise ValueError(f"write_video takes frames (an array or a list of images), got {type(frames).__name__}")
    video = video_frames(frames)  # [T, H, W, C] uint8
    _, height, width, channels = video.shape

    if extension == ".gif":
        images = [Image.fromarray(frame[..., 0] if channels == 1 else frame) for frame in video]
        images[0].save(path, save_all=True, append_images=images[1:], loop=0, duration=1000.0 / float(fps))
        return path

    av = import_av()
    codec, pixel_format = VIDEO_WRITERS[extension]
    if pixel_format is None:
        pixel_format = "gray" if channels == 1 else "bgr0"
    elif height % 2 or width % 2:
        raise ValueError(f"{extension} ({codec}, {pixel_format}) needs an even height and width, got {height}x{width}; "
                         "crop or pad the frames, or write .mkv (lossless) or .gif")
    if pixel_format != "gray" and channels == 1:
        video = np.repeat(video, 3, axis=-1)
    input_format = "gray" if pixel_format == "gray" else "rgb24"
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        stream.options = dict(ENCODER_OPTIONS.get(codec, {}))
        for frame in video:
            frame = frame[..., 0] if input_format == "gray" else frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=input_format)):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return path


def to_channels(video: np.ndarray, channels: int) -> np.ndarray:
    """uint8 frames `[T, H, W, C]` (C = 1 or 3) with `channels` channels: RGB -> gray by PIL's `convert("L")`
    luma (ITU-R 601-2, in the same integer arithmetic, so a gray video written as RGB reads back exactly), gray ->
    RGB by repeating the channel. `ValueError` for other channel counts."""
    have = video.shape[-1]
    if have == channels:
        return video
    if (have, channels) == (3, 1):
        red, green, blue = (video[..., index].astype(np.uint32) for index in range(3))
        return ((red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
    if (have, channels) == (1, 3):
        return np.repeat(video, 3, axis=-1)
    raise ValueError(f"cannot convert a video with {have} channels to {channels}; allowed: 1 (gray) and 3 (RGB)")


def export_to_video(frames, output_path: str | os.PathLike, fps: int = 8) -> str:
    """Write one video of a pipeline output to `output_path` (`.mp4` through PyAV or `.gif` through PIL, by
    `write_video`); return the path.

    Args:
        frames: one video: `np.ndarray` `[T, H, W, C]` or `[T, H, W]` in [0, 1] (`out.frames[i]` of
            `output_type="np"`; uint8 in [0, 255] also accepted), `torch.Tensor` `[T, C, H, W]` in [0, 1]
            (`output_type="pt"`), or a list of PIL frames (`output_type="pil"`).
        output_path: the file to write; its suffix picks the format.
        fps (`int`): frames per second.
    """
    if isinstance(frames, torch.Tensor):
        if frames.dim() != 4:
            raise ValueError(f"a torch video must be [T, C, H, W] in [0, 1], got {list(frames.shape)}")
        frames = frames.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    elif isinstance(frames, (list, tuple)):
        if not frames or not all(isinstance(frame, Image.Image) for frame in frames):
            raise ValueError("a list video must be a non-empty list of PIL frames")
        if len({(frame.mode, frame.size) for frame in frames}) != 1:
            raise ValueError(f"PIL frames must share mode and size, got "
                             f"{sorted({(frame.mode, frame.size) for frame in frames})}")
        frames = np.stack([np.asarray(frame) for frame in frames])
    elif not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array [T, H, W, C], a torch tensor [T, C, H, W] or a list of PIL "
                         f"frames, got {type(frames).__name__}")
    if frames.ndim not in (3, 4) or frames.shape[0] == 0:
        raise ValueError(f"frames must be one video [T, H, W, C] or [T, H, W], got shape {list(frames.shape)}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"frames must be floats in [0, 1] or uint8, got dtype {frames.dtype}")
        if not np.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
            raise ValueError(f"float frames must be in [0, 1], got values in [{np.nanmin(frames):g}, "
                             f"{np.nanmax(frames):g}]")
        frames = (frames * 255).round().astype(np.uint8)
    write_video(frames, output_path, fps=fps)
    return os.fspath(output_path)
