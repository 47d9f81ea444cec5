"""Pictures of samples (`mgnt_hf.visualization`): labelled grids, tiled videos, sample grids and strips."""

import numpy as np
import torch
from PIL import Image

from mgnt_hf.visualization import labelled_grid, pixels_to_pil, tile_videos, write_sample_grid, write_sample_strip


def test_labelled_grid_puts_each_rows_images_after_its_name():
    images = [Image.new("L", (4, 4), value) for value in (0, 50, 100, 150, 200, 250)]
    grid = labelled_grid(images, ["first", "second"], images_per_row=3, scale=2)
    assert grid.mode == "RGB" and grid.height == 2 * (8 + 2)
    # the last image of the second row ends at the right edge, before its 2 px gap
    assert grid.getpixel((grid.width - 3, 8 + 2)) == (250, 250, 250)
    assert grid.getpixel((grid.width - 3 - 10, 8 + 2)) == (200, 200, 200)


def test_tile_videos_shows_frame_t_of_every_video_with_white_gaps():
    videos = np.zeros((3, 2, 4, 5, 1), dtype=np.uint8)
    videos[2, 1] = 7
    tiled = tile_videos(videos, columns=2)
    assert tiled.shape == (2, 2 * (4 + 2), 2 * (5 + 2), 1)
    assert (tiled[1, 6:10, 0:5] == 7).all() and (tiled[0, 6:10, 0:5] == 0).all()  # video 2: second row, first column
    assert (tiled[:, 4:6] == 255).all()  # the gap below the first row


def test_pixels_to_pil_maps_minus_one_one_to_uint8_gray_or_rgb():
    gray = pixels_to_pil(torch.tensor([[[[-1.0, 1.0]]]]))
    assert gray[0].mode == "L" and np.asarray(gray[0]).tolist() == [[0, 255]]
    assert pixels_to_pil(torch.zeros(2, 3, 2, 2))[1].mode == "RGB"


def test_sample_grid_has_a_row_per_class(tmp_path):
    pixels = torch.rand(6, 1, 16, 16) * 2 - 1  # image j has class j % 3
    path = tmp_path / "grids" / "row.png"
    write_sample_grid(pixels, num_classes=3, images_per_class=2, id2label={0: "a"}, path=path)
    assert Image.open(path).height == 3 * (64 + 2)  # 16 px upscaled to 64


def test_sample_strip_has_a_row_per_video_and_a_column_per_frame(tmp_path):
    videos = [torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16)]
    path = tmp_path / "strip.png"
    write_sample_strip(videos, ["real 0", "predicted 0"], path)
    strip = Image.open(path)
    assert strip.height == 2 * (64 + 2) and strip.width > 3 * (64 + 2)
