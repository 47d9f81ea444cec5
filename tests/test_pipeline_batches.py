"""A call decodes in batches of at most `max_batch_size` outputs (issue 15, item 8): memory is one batch's, and with
one generator per output the decoded tokens are exactly those of a single batch of all."""

import numpy as np
import pytest
import torch


def generators(count, offset=0):
    return [torch.Generator().manual_seed(offset + seed) for seed in range(count)]


# The decoded tokens are exactly those of one batch. Pixels are the tokenizer's decode of those tokens: torch's CPU
# convolutions round differently at different batch sizes (measured up to 3e-6 in [0, 1]), so pixels are held to
# float32 rounding, not bits.
PIXEL_ROUNDING = 1e-5


@pytest.mark.parametrize("use_cache", [True, False])
def test_batches_give_exactly_the_tokens_of_one_batch(tiny_pipeline, use_cache):
    kwargs = dict(num_images_per_prompt=3, output_type="latent", use_cache=use_cache)
    whole = tiny_pipeline([0, 1, 2], generator=generators(9), **kwargs)
    batched = tiny_pipeline([0, 1, 2], generator=generators(9), max_batch_size=2, **kwargs)
    assert torch.equal(batched.images, whole.images)
    assert batched.gflops_per_image == whole.gflops_per_image
    assert batched.widths == whole.widths and batched.full_passes == whole.full_passes


@pytest.mark.parametrize("output_type", ["np", "pt", "pil"])
def test_every_output_type_is_assembled_in_order(tiny_pipeline, output_type):
    whole = tiny_pipeline([2, 0, 1, 1], generator=generators(4), output_type=output_type).images
    batched = tiny_pipeline([2, 0, 1, 1], generator=generators(4), output_type=output_type, max_batch_size=3).images
    if output_type == "pil":
        assert len(batched) == 4
        difference = max(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()
                         for a, b in zip(batched, whole))
        assert difference <= 1  # uint8 rounding of the float pixels below
    else:
        assert batched.shape == whole.shape
        np.testing.assert_allclose(np.asarray(batched), np.asarray(whole), rtol=0, atol=PIXEL_ROUNDING)


def test_given_start_grids_are_split_with_their_images(tiny_pipeline):
    start = torch.full((4, 4, 4), tiny_pipeline.transformer.config.mask_token_id)
    start[:, 0, 0] = torch.tensor([1, 2, 3, 4])
    whole = tiny_pipeline([0, 1, 2, 0], latents=start, generator=generators(4), output_type="latent").images
    batched = tiny_pipeline([0, 1, 2, 0], latents=start, generator=generators(4), output_type="latent",
                            max_batch_size=3).images
    assert torch.equal(batched, whole)
    assert torch.equal(batched[:, 0, 0], torch.tensor([1, 2, 3, 4]))


def test_each_batch_holds_at_most_max_batch_size_images(tiny_pipeline, monkeypatch):
    decoded = []
    decode = tiny_pipeline.vqvae.decode
    monkeypatch.setattr(tiny_pipeline.vqvae, "decode", lambda ids: decoded.append(ids.shape[0]) or decode(ids))
    seen = []
    tiny_pipeline(0, num_images_per_prompt=7, max_batch_size=3, output_type="np",
                  callback_on_step_end=lambda pipe, step, timestep, tensors: seen.append(tensors["latents"].shape[0]))
    assert decoded == [3, 3, 1]
    assert set(seen) == {3, 1} and max(seen) == 3


def test_a_callback_that_changes_guidance_starts_every_batch_at_the_call_value(tiny_pipeline):
    def guidance_off_after_first_step(pipe, step, timestep, tensors):
        pipe._guidance_scale = 1.0
        return {}

    kwargs = dict(num_images_per_prompt=4, guidance_scale=3.0, callback_on_step_end=guidance_off_after_first_step,
                  output_type="latent")
    whole = tiny_pipeline([1], generator=generators(4), **kwargs)
    batched = tiny_pipeline([1], generator=generators(4), max_batch_size=2, **kwargs)
    assert torch.equal(batched.images, whole.images)
    assert batched.gflops_per_image == whole.gflops_per_image


def test_the_video_pipeline_batches_the_same_way(tiny_video_pipeline):
    whole = tiny_video_pipeline([0, 1, 2], generator=generators(3), output_type="latent").frames
    batched = tiny_video_pipeline([0, 1, 2], generator=generators(3), output_type="latent", max_batch_size=2).frames
    assert torch.equal(batched, whole)
    frames = tiny_video_pipeline([0, 1, 2], generator=generators(3), output_type="np", max_batch_size=2).frames
    assert frames.shape == (3, 4, 16, 16, 1)
    np.testing.assert_allclose(frames, tiny_video_pipeline.decode_pixels(whole).permute(0, 2, 3, 4, 1).numpy(),
                               rtol=0, atol=PIXEL_ROUNDING)


@pytest.mark.parametrize("value", [0, -1, 2.5, None])
def test_max_batch_size_must_be_a_positive_integer(tiny_pipeline, value):
    with pytest.raises(ValueError, match="max_batch_size must be a positive integer"):
        tiny_pipeline(0, max_batch_size=value, output_type="latent")


def test_the_inpaint_pipeline_batches_the_same_way(tiny_pipeline):
    from mgnt_hf import MGNTInpaintPipeline

    inpaint = MGNTInpaintPipeline(**tiny_pipeline.components)
    inpaint.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    kwargs = dict(num_images_per_prompt=5, output_type="latent")
    whole = inpaint([0, 2], image, mask, generator=generators(10), **kwargs)
    batched = inpaint([0, 2], image, mask, generator=generators(10), max_batch_size=4, **kwargs)
    assert torch.equal(batched.images, whole.images)
    assert batched.gflops_per_image == whole.gflops_per_image
