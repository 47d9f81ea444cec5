"""MGNTVQConfig / MGNTVQModel: shapes, ranges, validation, save/load, gradients, codebook maintenance."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel

from mgnt_hf import MGNTVQConfig, MGNTVQModel


def tiny_config(**overrides):
    fields = dict(num_channels=3, resolution=16, codebook_size=16, embedding_dim=8, base_channels=8,
                  channel_multipliers=(1, 2, 2), num_res_blocks=1, norm_num_groups=4)
    fields.update(overrides)
    return MGNTVQConfig(**fields)


def tiny_model(**overrides):
    torch.manual_seed(0)
    return MGNTVQModel(tiny_config(**overrides)).eval()


def random_pixels(batch, channels, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator) * 2 - 1


def test_default_config_is_maskgit_imagenet_tokenizer():
    config = MGNTVQConfig()
    assert (config.num_channels, config.resolution, config.codebook_size) == (3, (256, 256), 1024)
    assert config.downsample_factor == 16
    assert config.token_grid == (16, 16)


def test_fashion_mnist_preset_gives_8x8_tokens_at_32px():
    config = MGNTVQConfig.from_preset("fashion-mnist")
    assert config.num_channels == 1
    assert config.resolution == (32, 32)
    assert config.downsample_factor == 4
    assert config.token_grid == (8, 8)
    assert 256 <= config.codebook_size <= 1024


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        MGNTVQConfig.from_preset("nope")


def test_rectangular_resolution_and_json_round_trip(tmp_path):
    config = tiny_config(resolution=(16, 24))
    assert config.token_grid == (4, 6)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["resolution"] == [16, 24]
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, MGNTVQConfig)
    assert reloaded.resolution == (16, 24) and reloaded.channel_multipliers == (1, 2, 2)
    assert reloaded.token_grid == (4, 6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_channels=2), "num_channels"),
        (dict(num_channels=4), "num_channels"),
        (dict(resolution=18), "not divisible by the downsampling factor 4"),
        (dict(resolution=(16, 0)), "resolution"),
        (dict(codebook_size=1), "codebook_size"),
        (dict(channel_multipliers=()), "channel_multipliers"),
        (dict(norm_num_groups=3), "norm_num_groups"),
        (dict(commitment_weight=-1.0), "commitment_weight"),
        (dict(usage_decay=1.0), "usage_decay"),
        (dict(embedding_dim=0), "embedding_dim"),
    ],
)
def test_invalid_config_fields_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("height, width", [(16, 16), (8, 12), (32, 16)])
def test_encode_decode_shapes_and_ranges(channels, height, width):
    model = tiny_model(num_channels=channels)
    pixels = random_pixels(2, channels, height, width)
    ids = model.encode(pixels)
    assert ids.dtype == torch.long
    assert ids.shape == (2, height // 4, width // 4)
    assert int(ids.min()) >= 0 and int(ids.max()) < model.config.codebook_size
    decoded = model.decode(ids)
    assert decoded.shape == (2, channels, height, width)
    assert float(decoded.min()) >= -1.0 and float(decoded.max()) <= 1.0


def test_forward_returns_reconstruction_ids_and_losses():
    model = tiny_model()
    pixels = random_pixels(2, 3, 16, 16)
    output = model(pixels)
    assert output.reconstruction.shape == pixels.shape
    assert torch.equal(output.token_ids, model.encode(pixels))
    expected_mse = torch.mean((output.reconstruction - pixels) ** 2)
    torch.testing.assert_close(output.reconstruction_loss, expected_mse)
    torch.testing.assert_close(
        output.loss, output.reconstruction_loss + output.codebook_loss + 0.25 * output.commitment_loss)
    # decode(encode(x)) is forward's reconstruction, clamped.
    torch.testing.assert_close(model.decode(output.token_ids), output.reconstruction.clamp(-1, 1))


def test_wrong_channel_count_raises():
    model = tiny_model(num_channels=1)
    with pytest.raises(ValueError, match="3 channels but this tokenizer takes num_channels=1"):
        model.encode(random_pixels(1, 3, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        model(random_pixels(1, 3, 16, 16))


@pytest.mark.parametrize("height, width", [(18, 16), (16, 30), (3, 3)])
def test_size_not_divisible_by_factor_raises(height, width):
    model = tiny_model()
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 4"):
        model.encode(random_pixels(1, 3, height, width))


def test_bad_pixel_tensors_and_ids_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model.encode(random_pixels(1, 3, 16, 16)[0])
    with pytest.raises(ValueError, match="float tensor"):
        model.encode(torch.zeros(1, 3, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 16\)"):
        model.decode(torch.full((1, 4, 4), 16, dtype=torch.long))
    with pytest.raises(ValueError, match="LongTensor"):
        model.decode(torch.zeros(1, 4, 4))


def test_save_load_round_trip_gives_identical_ids_and_pixels(tmp_path):
    model = tiny_model()
    # Make the persistent usage buffer non-default so that its round trip is tested too.
    model.quantizer.code_usage.copy_(torch.linspace(0.0, 1.0, 16))
    pixels = random_pixels(3, 3, 16, 16, seed=1)
    ids = model.encode(pixels)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = MGNTVQModel.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.encode(pixels), ids)
    assert torch.equal(reloaded.decode(ids), model.decode(ids))
    assert torch.equal(reloaded.quantizer.code_usage, model.quantizer.code_usage)


def test_auto_model_round_trip(tmp_path):
    model = tiny_model(num_channels=1)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is MGNTVQModel
    pixels = random_pixels(2, 1, 16, 16)
    assert torch.equal(reloaded.encode(pixels), model.encode(pixels))


def test_straight_through_gradient_reaches_encoder_and_codebook():
    model = tiny_model(restart_dead_codes=False).train()
    output = model(random_pixels(2, 3, 16, 16))
    # The reconstruction loss alone reaches the encoder only through the straight-through estimator
    # (argmin has no gradient); the codebook is moved by the codebook loss.
    output.reconstruction_loss.backward(retain_graph=True)
    assert model.encoder.conv_in.weight.grad is not None
    assert float(model.encoder.conv_in.weight.grad.abs().sum()) > 0
    assert model.quantizer.codebook.weight.grad is None
    output.codebook_loss.backward()
    assert float(model.quantizer.codebook.weight.grad.abs().sum()) > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    pixels = random_pixels(2, 3, 16, 16)
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model(restart_dead_codes=False).train()
        if checkpointing:
            # transformers is renaming gradient_checkpointing_enable to activation_checkpointing_enable.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        model(pixels).loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(gradients[0], gradients[1])


def test_usage_statistics_match_the_histogram():
    model = tiny_model()
    quantizer = model.quantizer
    # Latents equal to codes 0, 0, 1, 2 are assigned exactly those codes.
    codes = quantizer.codebook.weight.detach()
    latents = codes[[0, 0, 1, 2]].t().reshape(1, 8, 2, 2)
    output = quantizer(latents)
    assert output.token_ids.flatten().tolist() == [0, 0, 1, 2]
    shares = torch.tensor([0.5, 0.25, 0.25])
    torch.testing.assert_close(output.perplexity, torch.exp(-(shares * shares.log()).sum()))
    torch.testing.assert_close(output.codes_used_fraction, torch.tensor(3 / 16))


def test_dead_codes_are_restarted_in_training_only():
    model = tiny_model()
    quantizer = model.quantizer
    quantizer.codebook_initialized.fill_(1.0)
    quantizer.code_usage.fill_(1.0 / 16)
    quantizer.code_usage[[3, 5]] = 0.0  # dead: below dead_code_threshold / codebook_size
    before = quantizer.codebook.weight.detach().clone()
    pixels = random_pixels(2, 3, 16, 16)

    model.eval()
    model(pixels)
    assert torch.equal(quantizer.codebook.weight, before)

    model.train()
    output = model(pixels)
    assert output.num_restarted_codes == 2
    changed = (quantizer.codebook.weight.detach() != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [3, 5]
    # New codes are (slightly perturbed) encoder outputs of the batch, and get the uniform share back.
    with torch.no_grad():
        latents = model.encode_latents(pixels).permute(0, 2, 3, 1).reshape(-1, 8)
    for code in (3, 5):
        distance = (latents - quantizer.codebook.weight.detach()[code]).norm(dim=1).min()
        assert float(distance) < 1e-2 * float(latents.norm(dim=1).mean())
    assert float(quantizer.code_usage[3]) == pytest.approx(1 / 16, rel=1e-6)


def test_running_usage_follows_an_exponential_moving_average():
    model = tiny_model(restart_dead_codes=False).train()
    quantizer = model.quantizer
    quantizer.codebook_initialized.fill_(1.0)
    codes = quantizer.codebook.weight.detach().clone()
    latents = codes[[0, 0, 0, 1]].t().reshape(1, 8, 2, 2)
    quantizer(latents)
    expected = torch.full((16,), 1 / 16) * 0.99
    expected[0] += 0.01 * 0.75
    expected[1] += 0.01 * 0.25
    torch.testing.assert_close(quantizer.code_usage, expected)


def test_normalized_codes_search_by_cosine():
    model = tiny_model(normalize_codes=True)
    quantizer = model.quantizer
    codes = quantizer.codebook.weight.detach()
    # A scaled copy of a code has cosine 1 with it: the cosine search must pick that code.
    latents = (5.0 * codes[[7, 2]]).t().reshape(1, 8, 1, 2)
    assert quantizer.nearest_codes(latents).flatten().tolist() == [7, 2]
    output = quantizer(latents)
    torch.testing.assert_close(output.quantized.norm(dim=1), torch.ones(1, 1, 2))


def test_bfloat16_autocast_keeps_float32_code_search():
    model = tiny_model()
    pixels = random_pixels(2, 3, 16, 16)
    latents = model.encode_latents(pixels)
    reference = model.quantizer.nearest_codes(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model.quantizer.nearest_codes(latents), reference)


def test_first_training_batch_initializes_the_codebook_from_encoder_outputs(tmp_path):
    model = tiny_model()
    pixels = random_pixels(2, 3, 16, 16)
    before = model.quantizer.codebook.weight.detach().clone()
    model(pixels)  # eval mode: no initialisation
    assert torch.equal(model.quantizer.codebook.weight, before)
    assert float(model.quantizer.codebook_initialized) == 0.0

    model.train()
    model(pixels)
    assert float(model.quantizer.codebook_initialized) == 1.0
    with torch.no_grad():
        latents = model.encode_latents(pixels).permute(0, 2, 3, 1).reshape(-1, 8)
        codes = model.quantizer.codebook.weight.detach()
    # Every code is (nearly) one of the batch's encoder outputs.
    nearest = torch.cdist(codes, latents).min(dim=1).values
    assert float(nearest.max()) < 1e-2 * float(latents.norm(dim=1).mean())

    initialized = model.quantizer.codebook.weight.detach().clone()
    model.quantizer.restart_dead_codes = False
    model(pixels)  # only the first training call initialises
    assert torch.equal(model.quantizer.codebook.weight, initialized)
    model.save_pretrained(tmp_path)
    assert float(MGNTVQModel.from_pretrained(tmp_path).quantizer.codebook_initialized) == 1.0
