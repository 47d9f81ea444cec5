"""`mgnt extract` and `mgnt inpaint` on a tiny saved pipeline, and their errors."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from mgnt_hf import MGNTInpaintPipeline, MGNTPipeline, cli


@pytest.fixture
def saved_pipeline(tiny_pipeline, tmp_path):
    folder = tmp_path / "tiny-pipeline"
    tiny_pipeline.save_pretrained(folder)
    return folder


@pytest.fixture
def image_and_mask(tmp_path):
    """A 16x16 RGB PNG and a mask PNG (mode L) white over the lower half: 8 of the 16 tokens."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[8:] = 255
    Image.fromarray(pixels).save(tmp_path / "image.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "image.png", tmp_path / "mask.png"


def latents(pipe, labels=(0, 1, 2), **kwargs):
    generators = [torch.Generator().manual_seed(i) for i in range(len(labels))]
    pipe.set_progress_bar_config(disable=True)
    return pipe(list(labels), generator=generators, output_type="latent", **kwargs).images


# ---------------------------------------------------------------- mgnt extract


def test_extract_saves_a_smaller_pipeline_that_decodes_as_the_parent_at_that_width(saved_pipeline, tiny_pipeline,
                                                                                   tmp_path, capsys):
    output = tmp_path / "width-32"
    assert cli.main(["extract", str(saved_pipeline), "--width", "32", "--output", str(output), "--clip"]) == 0
    printed = capsys.readouterr().out
    assert "hidden size 32 (of 64)" in printed and "nested widths [8, 16, 32]" in printed
    assert "width schedule: [[0.25, 1], [0.5, 4], [1.0, 7]]" in printed and "MB, pipeline" in printed
    extracted = MGNTPipeline.from_pretrained(output)
    assert extracted.transformer.config.hidden_size == 32
    assert torch.equal(latents(extracted), latents(tiny_pipeline, width_schedule=[[0.125, 1], [0.25, 4], [0.5, 7]]))


def test_extract_keeps_the_pipeline_class(saved_pipeline, tmp_path):
    MGNTInpaintPipeline.from_pretrained(saved_pipeline).save_pretrained(tmp_path / "inpaint")
    assert cli.main(["extract", str(tmp_path / "inpaint"), "--width", "64", "--output", str(tmp_path / "out")]) == 0
    assert '"_class_name": "MGNTInpaintPipeline"' in (tmp_path / "out" / "model_index.json").read_text()


@pytest.mark.parametrize("arguments, message", [
    (["--width", "32"], "wider than the extracted width 32; allowed: segments of fraction <= 0.5, or clip=True"),
    (["--width", "48"], "width 48 is not one of nested_widths [8, 16, 32, 64]"),
])
def test_extract_errors_are_one_line(saved_pipeline, tmp_path, capsys, arguments, message):
    assert cli.main(["extract", str(saved_pipeline), *arguments, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert error.strip().splitlines()[-1].startswith("mgnt extract: error: ") and message in error
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- mgnt inpaint


def test_inpaint_writes_the_edited_image_as_the_pipeline_makes_it(saved_pipeline, image_and_mask, tmp_path, capsys):
    image, mask = image_and_mask
    output = tmp_path / "out" / "edited.png"
    assert cli.main(["inpaint", str(saved_pipeline), "--image", str(image), "--mask", str(mask), "--labels", "trouser",
                     "--seed", "5", "--output", str(output), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "tokens regenerated: 8 of 16" in printed and "GFLOPs/image" in printed
    written = Image.open(output)
    assert written.size == (16, 16)  # one result: the image itself, fit to be edited again
    pipe = MGNTInpaintPipeline.from_pretrained(saved_pipeline)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(1, Image.open(image), Image.open(mask), generator=[torch.Generator().manual_seed(5)]).images[0]
    assert written.convert("RGB").tobytes() == expected.tobytes()


def test_inpaint_with_several_labels_writes_a_grid_and_a_comparison(saved_pipeline, image_and_mask, tmp_path):
    image, mask = image_and_mask
    assert cli.main(["inpaint", str(saved_pipeline), "--image", str(image), "--mask", str(mask), "--labels", "0", "2",
                     "--num-images-per-label", "2", "--output", str(tmp_path / "grid.png"), "--comparison",
                     str(tmp_path / "comparison.png"), "--scale", "2", "--steps", "6", "--no-cache"]) == 0
    grid, comparison = Image.open(tmp_path / "grid.png"), Image.open(tmp_path / "comparison.png")
    assert grid.height == comparison.height == 2 * (32 + 2)  # two rows of 16 px images upscaled x2
    assert comparison.width - grid.width == 2 * (32 + 2)  # the image and the masked preview come first


@pytest.mark.parametrize("make_mask, message", [
    (lambda: Image.new("L", (8, 8)), r"mask_image must be .*got PIL image\(s\) \['L 8x8'\]"),
    (lambda: Image.new("RGB", (16, 16)), r"convert\('L'\)"),
])
def test_inpaint_mask_errors_are_one_line(saved_pipeline, image_and_mask, tmp_path, capsys, make_mask, message):
    image, _ = image_and_mask
    make_mask().save(tmp_path / "bad_mask.png")
    assert cli.main(["inpaint", str(saved_pipeline), "--image", str(image), "--mask", str(tmp_path / "bad_mask.png"),
                     "--labels", "0", "--output", str(tmp_path / "out.png")]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    last_line = error.strip().splitlines()[-1]
    assert last_line.startswith("mgnt inpaint: error: ") and re.search(message, last_line)


def test_inpaint_names_an_unreadable_image(saved_pipeline, image_and_mask, tmp_path, capsys):
    _, mask = image_and_mask
    assert cli.main(["inpaint", str(saved_pipeline), "--image", str(tmp_path / "missing.png"), "--mask", str(mask),
                     "--labels", "0", "--output", str(tmp_path / "out.png")]) == 2
    assert "cannot read the --image" in capsys.readouterr().err
