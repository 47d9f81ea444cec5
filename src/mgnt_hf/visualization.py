"""Pictures of samples: labelled image grids, tiled videos, sample grids and strips of the evaluations.

    grid = labelled_grid(pil_images, ["0: T-shirt/top", "1: Trouser"], images_per_row=4, scale=2)   # PIL image
    frames = tile_videos(videos_uint8, columns=4)        # [B, T, H, W, C] -> [T, H', W', C], one video
    write_sample_grid(pixels, num_classes=10, images_per_class=8, id2label=id2label, path="samples/default.png")
    write_sample_strip([video_a, video_b], ["real 0", "predicted 0"], "samples/default-prediction.png")
    preview = masked_preview(pil_image, token_mask)      # the regenerated tokens of an inpainting in gray

Used by the `mgnt` command line (`generate`, `generate-video`, `inpaint`) and the evaluations (`mgnt_hf.evaluation`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


GRID_PADDING = 2


def _name_column_width(row_names: list[str], font) -> int:
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return max(int(measure.textlength(name, font=font)) for name in row_names) + 12


def labelled_grid_size(row_names: list[str], images_per_row: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """`(width, height)` in pixels of the [`labelled_grid`] of images of `image_size` `(width, height)` (after
    upscaling), known before any image exists."""
    width, height = image_size
    name_width = _name_column_width(row_names, ImageFont.load_default())
    return name_width + images_per_row * (width + GRID_PADDING), len(row_names) * (height + GRID_PADDING)


def labelled_grid(images, row_names: list[str], images_per_row: int, scale: int) -> Image.Image:
    """One row per name: the name, then that row's `images_per_row` images (PIL images, upscaled `scale` x,
    nearest), rows in order; image `row * images_per_row + column` goes to (row, column). White background,
    2 px gaps."""
    font = ImageFont.load_default()
    width, height = images[0].width * scale, images[0].height * scale
    text_width = _name_column_width(row_names, font)
    padding = GRID_PADDING
    grid = Image.new("RGB", labelled_grid_size(row_names, images_per_row, (width, height)), "white")
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(row_names):
        top = row * (height + padding)
        draw.text((6, top + height // 2), name, fill="black", font=font, anchor="lm")
        for column in range(images_per_row):
            image = images[row * images_per_row + column].convert("RGB").resize((width, height), Image.NEAREST)
            grid.paste(image, (text_width + column * (width + padding), top))
    return grid


def tile_videos(videos: np.ndarray, columns: int, padding: int = 2) -> np.ndarray:
    """uint8 `[B, T, H, W, C]` -> `[T, rows * (H + padding), columns * (W + padding), C]`: every frame of the
    result shows frame t of each video, videos left to right then top to bottom (white gaps)."""
    count, frames, height, width, channels = videos.shape
    rows = -(-count // columns)
    tiled = np.full((frames, rows * (height + padding), columns * (width + padding), channels), 255, dtype=np.uint8)
    for index, video in enumerate(videos):
        top, left = (index // columns) * (height + padding), (index % columns) * (width + padding)
        tiled[:, top:top + height, left:left + width] = video
    return tiled


def pixels_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """`[B, C, H, W]` in `[-1, 1]` -> PIL images (mode L for one channel, RGB for three)."""
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in array]


def _default_scale(image: Image.Image) -> int:
    """The integer upscaling that brings a small image to about 64 px (at least 1)."""
    return max(1, 64 // image.height)


def write_sample_grid(pixels: torch.Tensor, num_classes: int, images_per_class: int, id2label: dict,
                      path: str | os.PathLike) -> None:
    """Grid PNG of class-conditional samples `[N, C, H, W]` in `[-1, 1]` where image j has class j % num_classes:
    one row per class (`"<id>: <name>"`), its first `images_per_class` samples."""
    order = [label + num_classes * column for label in range(num_classes) for column in range(images_per_class)]
    images = pixels_to_pil(pixels[order])
    names = [f"{label}: {id2label[label]}" if label in id2label else str(label) for label in range(num_classes)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(images, names, images_per_class, _default_scale(images[0])).save(path)


def write_sample_strip(videos: list[torch.Tensor], row_names: list[str], path: str | os.PathLike) -> None:
    """PNG with one labelled row per video, its frames left to right; each video `[T, C, H, W]` in [0, 1]."""
    num_frames = videos[0].shape[0]
    images = pixels_to_pil(torch.cat(videos) * 2 - 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(images, row_names, num_frames, _default_scale(images[0])).save(path)


def masked_preview(image: Image.Image, token_mask, fill: int = 128) -> Image.Image:
    """`image` with the footprint of every regenerated token (`token_mask` `[h, w]`, True = regenerated) filled
    mid-gray: what an inpainting keeps and what it decodes again (a white mask would vanish on a white page)."""
    token_mask = np.asarray(token_mask, dtype=bool)
    factor = image.height // token_mask.shape[0]
    pixel_mask = token_mask.repeat(factor, axis=0).repeat(factor, axis=1)  # [H, W]
    pixels = np.array(image.convert("RGB"))
    pixels[pixel_mask] = fill
    return Image.fromarray(pixels)
