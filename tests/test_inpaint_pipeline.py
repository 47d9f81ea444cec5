"""MGNTInpaintPipeline: kept tokens, the mask footprint rule, the mask schedule over the tokens to regenerate, the
cache, the accepted image and mask forms, and bad inputs. conftest's tiny tokenizer: 16x16 RGB, x4 -> 4x4 tokens."""

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import make_tiny_transformer, make_tiny_video_vqvae

from mgnt_hf import MGNTInpaintPipeline, MGNTScheduler
from mgnt_hf.masking import num_masked_after_step


@pytest.fixture
def inpaint(tiny_pipeline) -> MGNTInpaintPipeline:
    pipe = MGNTInpaintPipeline(**tiny_pipeline.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_image(batch=1, seed=0) -> torch.Tensor:
    """`[B, 3, 16, 16]` floats in [0, 1]."""
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def token_block_mask(rows: slice, columns: slice, batch=1) -> torch.Tensor:
    """`[B, 1, 16, 16]` mask, white over the footprints of token rows x columns (4 x 4 pixels each)."""
    mask = torch.zeros(batch, 1, 4, 4)
    mask[:, :, rows, columns] = 1
    return mask.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)


def encoded(pipe, image: torch.Tensor) -> torch.LongTensor:
    return pipe.vqvae.encode(image * 2 - 1)


def edit(pipe, image, mask, labels=0, seed=0, **kwargs):
    return pipe(labels, image, mask, generator=torch.Generator().manual_seed(seed), output_type="latent", **kwargs)


# ---------------------------------------------------------------- what is kept and what is regenerated


def test_the_pipeline_takes_the_generation_pipelines_components(tiny_pipeline, inpaint):
    assert set(inpaint.components) == set(tiny_pipeline.components)
    assert inpaint.transformer is tiny_pipeline.transformer


@pytest.mark.parametrize("form", ["pt", "np", "pil"])
def test_unmasked_tokens_are_the_images_tokens_exactly(inpaint, form):
    image, mask = random_image(), token_block_mask(slice(1, 3), slice(0, 4))
    image = (image * 255).round() / 255  # exactly representable in 8 bits, so every form is the same image
    given_image, given_mask = {
        "pt": (image, mask),
        "np": (image.permute(0, 2, 3, 1).numpy(), mask.permute(0, 2, 3, 1).numpy()),
        "pil": (PIL.Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)),
                PIL.Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8))),
    }[form]
    out = edit(inpaint, given_image, given_mask)
    expected = encoded(inpaint, image)
    assert out.images.shape == (1, 4, 4) and out.images.dtype == torch.long
    kept = ~out.token_mask
    assert int(out.token_mask.sum()) == 8 and bool(out.token_mask[0, 1:3].all())
    assert torch.equal(out.images[kept], expected[kept])
    assert bool((out.images < 16).all())  # every regenerated token was decoded


def test_a_token_is_regenerated_when_any_pixel_of_its_footprint_is_white(inpaint):
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 5, 9] = 1.0  # one pixel in token (row 1, column 2)
    mask[0, 0, 15, 0] = 0.5  # white from 0.5 (diffusers' binarisation): token (3, 0)
    mask[0, 0, 0, 15] = 0.49  # black: token (0, 3) is kept
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, 1, 2] = expected[0, 3, 0] = True
    assert torch.equal(inpaint.token_mask(mask), expected)
    assert torch.equal(edit(inpaint, random_image(), mask).token_mask, expected)


def test_the_mask_schedule_counts_from_the_tokens_to_regenerate(inpaint):
    masked_counts = []

    def record(pipe, step, timestep, callback_kwargs):
        masked_counts.append(int((callback_kwargs["latents"] == 16).sum()))
        return {}

    mask = token_block_mask(slice(0, 2), slice(0, 4))  # 8 of the 16 tokens
    out = edit(inpaint, random_image(), mask, num_inference_steps=4, width_schedule="maskgit",
               callback_on_step_end=record)
    expected = [num_masked_after_step("cosine", step, 4, 8) for step in range(4)]
    assert masked_counts == expected == [7, 5, 3, 0]
    # a schedule over the whole grid would keep more masked: floor(16 cos(pi/4)) = 11 after step 1, capped at 6
    assert num_masked_after_step("cosine", 1, 4, 16) > expected[1]
    assert out.widths == [64] * 4


def test_a_few_masked_tokens_finish_early_and_the_last_steps_run_nothing(inpaint):
    mask = token_block_mask(slice(0, 1), slice(0, 2))  # 2 tokens, 12 steps: at least one revealed per step
    out = edit(inpaint, random_image(), mask)
    assert out.widths[:2] == [8, 16] and out.widths[2:] == [None] * 10


def test_kept_tokens_never_run_in_a_cached_step_and_run_once_at_one_width(inpaint):
    forwards = []
    forward = inpaint.transformer.forward

    def recording_forward(input_ids, class_labels, width=None, cache=None, active_positions=None, **kwargs):
        forwards.append(active_positions)
        return forward(input_ids, class_labels, width=width, cache=cache, active_positions=active_positions, **kwargs)

    inpaint.transformer.forward = recording_forward
    out = edit(inpaint, random_image(), token_block_mask(slice(1, 4), slice(1, 4)), width_schedule=[[1.0, 6]])
    regenerated = out.token_mask.view(1, -1)
    assert len(forwards) > 1 and forwards[0] is None  # one full pass, then cached steps only
    assert all(positions is not None for positions in forwards[1:])
    for positions in forwards[1:]:
        assert bool(regenerated[0, positions[0]].all()) and bool(regenerated[0, positions[1]].all())  # 2 branches


def test_cache_refreshed_every_step_equals_cache_off(inpaint):
    image, mask = random_image(2), token_block_mask(slice(0, 3), slice(1, 4), batch=2)
    cached = edit(inpaint, image, mask, labels=[0, 2], cache_refresh_interval=1)
    uncached = edit(inpaint, image, mask, labels=[0, 2], use_cache=False)
    assert cached.widths == uncached.widths and None not in cached.widths[:8]
    ran = [width is not None for width in cached.widths]
    assert cached.full_passes == uncached.full_passes == ran  # every step that had tokens left was a full pass
    assert torch.equal(cached.images, uncached.images)
    assert cached.gflops_per_image == uncached.gflops_per_image


def test_the_cache_saves_compute_over_the_masked_tokens(inpaint):
    image, mask = random_image(), token_block_mask(slice(0, 3), slice(0, 4))
    cached, uncached = edit(inpaint, image, mask), edit(inpaint, image, mask, use_cache=False)
    assert not all(cached.full_passes)
    assert cached.gflops_per_image < uncached.gflops_per_image


def test_an_empty_mask_returns_the_reconstruction_without_running_the_transformer(inpaint):
    inpaint.transformer.forward = None  # any forward would fail
    image = random_image()
    out = inpaint(1, image, np.zeros((1, 16, 16), dtype=np.float32), output_type="pt")
    assert torch.equal(out.images, inpaint.decode_pixels(encoded(inpaint, image)))
    assert out.gflops_per_image == 0 and out.widths == [None] * 12 and not bool(out.token_mask.any())


# ---------------------------------------------------------------- batches and outputs


def test_one_image_and_mask_serve_every_label_and_each_output_matches_its_own_call(inpaint):
    image, mask = random_image(), token_block_mask(slice(2, 4), slice(0, 4))
    generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
    batch = inpaint([0, 2], image, mask, generator=generators, output_type="latent")
    assert batch.images.shape == (2, 4, 4)
    for index, (label, seed) in enumerate([(0, 3), (2, 4)]):
        alone = edit(inpaint, image, mask, labels=label, seed=seed)
        assert torch.equal(batch.images[index], alone.images[0])


def test_images_per_prompt_repeat_each_image(inpaint):
    out = edit(inpaint, random_image(2), token_block_mask(slice(0, 2), slice(0, 2)), labels="trouser",
               num_images_per_prompt=2)
    assert out.images.shape == (4, 4, 4)
    expected = encoded(inpaint, random_image(2)).repeat_interleave(2, dim=0)
    assert torch.equal(out.images[~out.token_mask], expected[~out.token_mask])


@pytest.mark.parametrize("output_type, check", [
    ("pil", lambda images: len(images) == 1 and images[0].size == (16, 16) and images[0].mode == "RGB"),
    ("np", lambda images: images.shape == (1, 16, 16, 3) and images.min() >= 0 and images.max() <= 1),
    ("pt", lambda images: images.shape == (1, 3, 16, 16)),
])
def test_output_types(inpaint, output_type, check):
    out = inpaint(0, random_image(), token_block_mask(slice(0, 1), slice(0, 4)), output_type=output_type,
                  generator=torch.Generator().manual_seed(0))
    assert check(out.images)


def test_the_saved_pipeline_names_its_module_and_loads(inpaint, tmp_path):
    inpaint.save_pretrained(tmp_path / "inpaint")
    assert '"mgnt_hf.pipeline_mgnt_inpaint"' in (tmp_path / "inpaint" / "model_index.json").read_text()
    loaded = MGNTInpaintPipeline.from_pretrained(tmp_path / "inpaint")
    loaded.set_progress_bar_config(disable=True)
    image, mask = random_image(), token_block_mask(slice(0, 2), slice(1, 3))
    assert torch.equal(edit(loaded, image, mask).images, edit(inpaint, image, mask).images)


# ---------------------------------------------------------------- bad input


def pil_image(mode="RGB", size=(16, 16)):
    return PIL.Image.new(mode, size)


@pytest.mark.parametrize("image, mask, message", [
    (torch.rand(1, 3, 8, 16), None, r"image must be .*torch tensor \[B, 3, 16, 16\].*got a torch tensor of shape "
                                    r"\[1, 3, 8, 16\]"),
    (torch.rand(1, 1, 16, 16), None, r"got a torch tensor of shape \[1, 1, 16, 16\]"),
    (np.random.rand(1, 3, 16, 16), None, r"numpy array \[B, 16, 16, 3\].*got a numpy array of shape \[1, 3, 16, 16\]"),
    # A fixed range: a random one once printed its minimum as 8.34465e-06, which the pattern did not expect.
    (torch.linspace(0, 1.95, 768).reshape(1, 3, 16, 16), None,
     r"image must hold values in \[0, 1\]; got values in \[0, 1.95\]"),
    (-torch.rand(1, 3, 16, 16), None, r"image must hold values in \[0, 1\]"),
    (torch.full((1, 3, 16, 16), float("nan")), None, r"image must hold values in \[0, 1\]; got values in none finite"),
    (np.zeros((1, 16, 16, 3), dtype=np.uint8), None, r"floats in \[0, 1\]; got dtype torch.uint8"),
    (pil_image("L"), None, r"PIL image of mode RGB of 16x16.*got PIL image\(s\) \['L 16x16'\]"),
    (pil_image("RGB", (32, 32)), None, r"got PIL image\(s\) \['RGB 32x32'\]"),
    ([], None, "got list"),
    ("image.png", None, "got str"),
    (None, torch.zeros(1, 1, 16, 8), r"mask_image must be .*\[B, 1, 16, 16\].*got a torch tensor of shape "
                                     r"\[1, 1, 16, 8\]"),
    (None, torch.full((1, 1, 16, 16), 255.0), r"mask_image must hold values in \[0, 1\]; got values in \[255, 255\]"),
    (None, pil_image("RGB"), r"mode L or 1 of 16x16.*got PIL image\(s\) \['RGB 16x16'\].*convert\('L'\)"),
    (None, np.zeros((1, 16, 16, 3), dtype=np.float32), r"got a numpy array of shape \[1, 16, 16, 3\]"),
    (None, torch.zeros(1, 1, 16, 16, dtype=torch.long), "got dtype torch.int64"),
])
def test_bad_images_and_masks_raise(inpaint, image, mask, message):
    image = random_image() if image is None else image
    mask = token_block_mask(slice(0, 1), slice(0, 1)) if mask is None else mask
    with pytest.raises(ValueError, match=message):
        inpaint(0, image, mask)


def test_counts_of_labels_images_and_masks_must_match_or_be_one(inpaint):
    with pytest.raises(ValueError, match="got 3 class labels, 2 images and 1 masks; each must be 1 .* or the same"):
        inpaint([0, 1, 2], random_image(2), token_block_mask(slice(0, 1), slice(0, 1)))


def test_a_pipeline_without_an_image_tokenizer_is_refused(tiny_pipeline):
    without = MGNTInpaintPipeline(tiny_pipeline.transformer, None, MGNTScheduler())
    with pytest.raises(ValueError, match="needs a vqvae to encode the image"):
        without(0, random_image(), token_block_mask(slice(0, 1), slice(0, 1)), output_type="latent")
    video_tokenizer = make_tiny_video_vqvae()
    video = MGNTInpaintPipeline(make_tiny_transformer(token_grid=(2, 4, 4)), video_tokenizer, MGNTScheduler())
    with pytest.raises(ValueError, match="edits images, but the tokenizer is a video tokenizer"):
        video(0, random_image(), token_block_mask(slice(0, 1), slice(0, 1)))
