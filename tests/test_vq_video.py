"""Video mode of MGNTVQConfig / MGNTVQModel: shapes, causality in time, validation, save/load, training."""

import pytest
import torch

from mgnt_hf import MGNTVQConfig, MGNTVQModel
from mgnt_hf.modeling_vq import batch_to_frames, frames_to_batch


def tiny_video_config(**overrides):
    fields = dict(num_channels=1, resolution=16, codebook_size=16, embedding_dim=8, base_channels=8,
                  channel_multipliers=(1, 2), num_res_blocks=1, norm_num_groups=4, num_frames=8,
                  temporal_downsample_factor=4)
    fields.update(overrides)
    return MGNTVQConfig(**fields)


def tiny_video_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return MGNTVQModel(tiny_video_config(**overrides)).eval()


def random_video(batch, channels, frames, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, frames, height, width, generator=generator) * 2 - 1


def test_video_config_token_grid_and_preset():
    config = tiny_video_config()
    assert config.is_video and config.token_grid == (2, 8, 8)
    assert not MGNTVQConfig().is_video
    preset = MGNTVQConfig.from_preset("moving-fashion-mnist")
    assert preset.token_grid == (4, 8, 8)
    assert (preset.num_frames, preset.temporal_downsample_factor, preset.resolution) == (16, 4, (64, 64))


@pytest.mark.parametrize("overrides, message", [
    (dict(temporal_downsample_factor=3), "power of two"),
    (dict(temporal_downsample_factor=0), "power of two"),
    (dict(num_frames=6), "multiple of temporal_downsample_factor"),
    (dict(num_frames=0), "multiple of temporal_downsample_factor"),
    (dict(num_frames=None), "needs num_frames"),
    (dict(num_temporal_res_blocks=0), "num_temporal_res_blocks"),
])
def test_invalid_video_fields_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_video_config(**overrides)


@pytest.mark.parametrize("factor, frames", [(1, 3), (2, 4), (4, 8), (4, 16)])
def test_video_round_trip_shapes_and_ranges(factor, frames):
    model = tiny_video_model(temporal_downsample_factor=factor, num_frames=max(frames, factor))
    video = random_video(2, 1, frames, 16, 12)
    ids = model.encode(video)
    assert ids.shape == (2, frames // factor, 8, 6) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < 16
    decoded = model.decode(ids)
    assert decoded.shape == (2, 1, frames, 16, 12)
    assert float(decoded.min()) >= -1 and float(decoded.max()) <= 1


def test_encoder_is_causal_in_time():
    """Encoding the first K frames alone gives exactly the first K / ft latent frames of the whole clip, and
    changing later frames never changes earlier tokens (frame prediction relies on both)."""
    model = tiny_video_model(num_frames=12)
    video = random_video(2, 1, 12, 16, 16)
    full = model.encode_latents(video)
    assert torch.equal(model.encode_latents(video[:, :, :4]), full[:, :, :1])
    assert torch.equal(model.encode_latents(video[:, :, :8]), full[:, :, :2])
    changed = video.clone()
    changed[:, :, 8:] = -changed[:, :, 8:]
    assert torch.equal(model.encode(changed)[:, :2], model.encode(video)[:, :2])
    assert not torch.equal(model.encode_latents(changed)[:, :, 2], full[:, :, 2])


def test_frames_to_batch_round_trip():
    hidden = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).view(2, 3, 4, 5, 6)
    flat = frames_to_batch(hidden)
    assert flat.shape == (8, 3, 5, 6)
    assert torch.equal(flat[1 * 4 + 2], hidden[1, :, 2])
    assert torch.equal(batch_to_frames(flat, 2), hidden)


def test_bad_video_inputs_raise_naming_the_expected_shape():
    model = tiny_video_model()
    with pytest.raises(ValueError, match=r"\[B, 1, T, H, W\] with T a multiple of 4"):
        model.encode(random_video(1, 1, 6, 16, 16))  # 6 frames: not a multiple of 4
    with pytest.raises(ValueError, match=r"trained at \[B, 1, 8, 16, 16\]"):
        model.encode(random_video(1, 3, 8, 16, 16))  # 3 channels
    with pytest.raises(ValueError, match=r"\[B, 1, T, H, W\]"):
        model.encode(torch.rand(1, 1, 16, 16))  # an image given to a video tokenizer
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(random_video(1, 1, 8, 15, 16))
    with pytest.raises(ValueError, match=r"\[B, t, h, w\]"):
        model.decode(torch.zeros(1, 8, 8, dtype=torch.long))
    image_model = MGNTVQModel(tiny_video_config(num_frames=None, temporal_downsample_factor=1)).eval()
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        image_model.encode(random_video(1, 1, 8, 16, 16))


def test_video_save_load_round_trip(tmp_path):
    model = tiny_video_model()
    video = random_video(2, 1, 8, 16, 16)
    model.save_pretrained(tmp_path)
    loaded = MGNTVQModel.from_pretrained(tmp_path).eval()
    assert loaded.config.is_video and loaded.config.token_grid == (2, 8, 8)
    ids = model.encode(video)
    assert torch.equal(loaded.encode(video), ids)
    assert torch.equal(loaded.decode(ids), model.decode(ids))


def test_video_training_step_reaches_temporal_weights():
    model = tiny_video_model().train()
    output = model(random_video(2, 1, 8, 16, 16))
    assert output.reconstruction.shape == (2, 1, 8, 16, 16)
    assert output.token_ids.shape == (2, 2, 8, 8)
    output.loss.backward()
    for module in (model.encoder.temporal, model.decoder.temporal):
        assert all(parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
                   for parameter in module.parameters())
