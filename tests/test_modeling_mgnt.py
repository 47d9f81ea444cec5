"""MGNTConfig / MGNTTransformer: nesting, KV cache, FLOPs, serialisation, errors."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModel

from mgnt_hf import MGNTConfig, MGNTKVCache, MGNTTransformer, count_forward_flops

TINY = dict(codebook_size=16, num_classes=3, token_grid=(4, 4), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, nested_widths=(8, 16, 32))


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return MGNTTransformer(MGNTConfig(**{**TINY, **overrides})).eval()


def random_inputs(config, batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.codebook_size + 1, (batch, config.num_grid_tokens), generator=generator)
    labels = torch.randint(0, config.num_classes + 1, (batch,), generator=generator)
    return ids, labels


def standalone_model(model, width):
    """The MGNTTransformer of hidden size `width` whose parameters are leading slices of `model`'s."""
    config = model.config
    small = MGNTTransformer(MGNTConfig(**{
        **TINY, "token_grid": config.token_grid, "position_embedding_type": config.position_embedding_type,
        "hidden_size": width, "num_attention_heads": config.heads_at(width),
        "intermediate_size": config.intermediate_size_at(width), "nested_widths": (width,)}))
    shared = model.state_dict()
    sliced = {name: shared[name][tuple(slice(0, size) for size in tensor.shape)]
              for name, tensor in small.state_dict().items()}
    small.load_state_dict(sliced)
    return small.eval()


# Image grid, and a video grid (t, h, w) with the same 16 tokens: nesting, cache and FLOPs do not depend on it.
GRIDS = [(4, 4), (2, 2, 4)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("width", TINY["nested_widths"])
def test_every_width_is_exactly_the_standalone_model_of_its_sliced_weights(width, grid):
    model = tiny_model(token_grid=grid)
    ids, labels = random_inputs(model.config)
    nested = model(ids, labels, width=width).logits
    standalone = standalone_model(model, width)(ids, labels).logits
    assert nested.shape == (3, 16, 16)
    torch.testing.assert_close(nested, standalone, rtol=0, atol=1e-6)


def test_width_none_is_the_full_model():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    assert torch.equal(model(ids, labels).logits, model(ids, labels, width=32).logits)


def test_input_ids_may_be_given_as_a_grid():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    assert torch.equal(model(ids.view(3, 4, 4), labels).logits, model(ids, labels).logits)


@pytest.mark.parametrize("width", [8, 16])
def test_a_loss_at_a_width_reaches_only_the_leading_slices(width):
    model = tiny_model().train()
    ids, labels = random_inputs(model.config)
    model(ids, labels, width=width).logits.square().mean().backward()
    config = model.config
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        small_shape = standalone_model(model, width).state_dict()[name].shape
        inside = tuple(slice(0, size) for size in small_shape)
        assert parameter.grad[inside].abs().sum() > 0, name
        outside = parameter.grad.clone()
        outside[inside] = 0
        assert torch.count_nonzero(outside) == 0, name
    assert config.nested_widths[-1] == 32


def test_nesting_adds_no_parameters():
    nested = tiny_model()
    single = tiny_model(nested_widths=(32,))
    assert sum(p.numel() for p in nested.parameters()) == sum(p.numel() for p in single.parameters())


def test_save_pretrained_and_automodel_round_trip(tmp_path):
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = MGNTTransformer.from_pretrained(tmp_path).eval()
    auto = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(auto, MGNTTransformer)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MGNTConfig)
    assert auto.config.token_grid == (4, 4) and auto.config.nested_widths == (8, 16, 32)
    for width in TINY["nested_widths"]:
        reference = model(ids, labels, width=width).logits
        assert torch.equal(loaded(ids, labels, width=width).logits, reference)
        assert torch.equal(auto(ids, labels, width=width).logits, reference)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("width", TINY["nested_widths"])
def test_cached_forward_over_active_positions_equals_the_full_forward(width, grid):
    model = tiny_model(token_grid=grid)
    ids, labels = random_inputs(model.config)
    cache = model.new_cache(batch_size=3)
    full = model(ids, labels, width=width, cache=cache).logits
    assert cache.width == width
    active = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(i))[:5] for i in range(3)])
    cached = model(ids, labels, width=width, cache=cache, active_positions=active).logits
    assert cached.shape == (3, 5, 16)
    expected = torch.gather(full, 1, active[..., None].expand(-1, -1, 16))
    torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-5)


def test_cached_forward_with_a_stale_cache_runs_and_differs():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    cache = model.new_cache(batch_size=3)
    model(ids, labels, cache=cache)
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 16  # positions outside the active set change
    active = torch.arange(4).expand(3, 4)
    stale = model(changed, labels, cache=cache, active_positions=active).logits
    fresh = model(changed, labels).logits[:, :4]
    assert not torch.allclose(stale, fresh, atol=1e-4)


def test_cache_keeps_keys_of_positions_that_left_the_active_set():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    cache = model.new_cache(batch_size=3)
    model(ids, labels, width=16, cache=cache)
    before = cache.keys[:, :, :2].clone()
    active = torch.arange(4).expand(3, 4)  # grid positions 0..3 = sequence positions 1..4
    model(ids.flip(1), labels, width=16, cache=cache, active_positions=active)
    torch.testing.assert_close(cache.keys[:, :, :2, 5:], before[..., 5:, :])
    assert not torch.allclose(cache.keys[:, :, :2, 1:5], before[..., 1:5, :])


def test_video_grid_runs_with_factorised_positions():
    model = tiny_model(token_grid=(2, 3, 4))
    assert model.embeddings.temporal_position_embeddings.shape == (2, 32)
    assert model.embeddings.position_embeddings.shape == (12, 32)
    ids, labels = random_inputs(model.config)
    assert model(ids.view(3, 2, 3, 4), labels, width=8).logits.shape == (3, 24, 16)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids, labels = random_inputs(tiny_model().config)
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            # transformers is renaming gradient_checkpointing_enable; use whichever this version has.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            assert model.layers[0].gradient_checkpointing
        model(ids, labels, width=16).logits.square().mean().backward()
        gradients.append(model.layers[0].mlp.fc1.weight.grad)
    torch.testing.assert_close(gradients[0], gradients[1])


def counted_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("width", TINY["nested_widths"])
def test_analytic_flops_match_torch_for_full_and_cached_forwards(width, grid):
    model = tiny_model(token_grid=grid)
    config = model.config
    ids, labels = random_inputs(config, batch=2)
    cache = model.new_cache(batch_size=2)
    with torch.no_grad():
        full = counted_flops(lambda: model(ids, labels, width=width, cache=cache))
        active = torch.arange(6).expand(2, 6)
        cached = counted_flops(lambda: model(ids, labels, width=width, cache=cache, active_positions=active))
    assert full == pytest.approx(count_forward_flops(config, width, batch_size=2), rel=0.02)
    assert cached == pytest.approx(count_forward_flops(config, width, batch_size=2, num_active_tokens=6), rel=0.02)
    assert cached < full


def test_analytic_flops_scale_about_quadratically_with_width():
    config = MGNTConfig.from_preset("B")
    full = count_forward_flops(config)
    assert 10 < full / count_forward_flops(config, 192) < 16


def test_factorized_positions_are_the_sum_of_a_frame_a_row_and_a_column_table():
    model = tiny_model(token_grid=(2, 3, 4), position_embedding_type="factorized")
    embeddings = model.embeddings
    assert embeddings.position_embeddings is None
    assert embeddings.row_position_embeddings.shape == (3, 32) and embeddings.column_position_embeddings.shape == (4, 32)
    for width in TINY["nested_widths"]:
        table = embeddings.grid_position_embeddings(width)
        assert table.shape == (24, width)
        for t in range(2):
            for i in range(3):
                for j in range(4):
                    expected = embeddings.temporal_position_embeddings[t, :width] + (
                        embeddings.row_position_embeddings[i, :width] + embeddings.column_position_embeddings[j, :width])
                    assert torch.equal(table[t * 12 + i * 4 + j], expected)
    joint = tiny_model(token_grid=(2, 3, 4))
    saved = (12 - 3 - 4) * 32  # one row per (h, w) position against one per row and one per column
    assert joint.num_parameters() - model.num_parameters() == saved


@pytest.mark.parametrize("grid", [(4, 4), (2, 2, 4)])
def test_factorized_positions_keep_nesting_and_the_cache_exact(grid):
    model = tiny_model(token_grid=grid, position_embedding_type="factorized")
    ids, labels = random_inputs(model.config)
    for width in TINY["nested_widths"]:
        nested = model(ids, labels, width=width).logits
        torch.testing.assert_close(nested, standalone_model(model, width)(ids, labels).logits, rtol=0, atol=1e-6)
        cache = model.new_cache(batch_size=3)
        full = model(ids, labels, width=width, cache=cache).logits
        active = torch.arange(5).expand(3, 5) + 7
        cached = model(ids, labels, width=width, cache=cache, active_positions=active).logits
        torch.testing.assert_close(cached, full[:, 7:12], rtol=1e-5, atol=1e-5)


def test_factorized_positions_round_trip_and_a_pipeline_refuses_them_under_a_joint_config(tmp_path):
    from mgnt_hf import MGNTScheduler, MGNTVideoPipeline, MGNTVQConfig, MGNTVQModel

    model = tiny_model(token_grid=(2, 4, 4), position_embedding_type="factorized")
    model.save_pretrained(tmp_path / "factorized")
    loaded = MGNTTransformer.from_pretrained(tmp_path / "factorized")
    assert loaded.config.position_embedding_type == "factorized"
    ids, labels = random_inputs(model.config)
    assert torch.equal(loaded(ids, labels).logits, model(ids, labels).logits)
    # Loading them as "joint" would leave the (h, w) table random: refused, by the model and by a pipeline.
    with pytest.raises(OSError, match="lack 1 tensor that its MGNTTransformer config needs: "
                                      "embeddings.position_embeddings; they would start random"):
        MGNTTransformer.from_pretrained(tmp_path / "factorized", position_embedding_type="joint")
    with pytest.raises(OSError, match="lack 1 tensor"):
        AutoModel.from_pretrained(tmp_path / "factorized", position_embedding_type="joint")
    vqvae = MGNTVQModel(MGNTVQConfig(num_channels=1, resolution=16, codebook_size=16, embedding_dim=8, base_channels=8,
                                     channel_multipliers=(1, 2, 2), norm_num_groups=4, num_frames=4,
                                     temporal_downsample_factor=2))
    MGNTVideoPipeline(model, vqvae, MGNTScheduler()).save_pretrained(tmp_path / "pipe")
    config_path = tmp_path / "pipe" / "transformer" / "config.json"
    config_path.write_text(config_path.read_text().replace('"factorized"', '"joint"'))
    with pytest.raises(OSError, match="lack 1 tensor .*embeddings.position_embeddings"):
        MGNTVideoPipeline.from_pretrained(tmp_path / "pipe")


@pytest.mark.parametrize("overrides, message", [
    (dict(nested_widths=(8, 16)), "must end with hidden_size"),
    (dict(nested_widths=(16, 8, 32)), "strictly ascending"),
    (dict(nested_widths=(12, 32)), "not a positive multiple of head_dim"),
    (dict(hidden_size=30, nested_widths=(30,)), "divisible by num_attention_heads"),
    (dict(token_grid=(4,)), "token_grid"),
    (dict(codebook_size=0), "codebook_size"),
    (dict(class_dropout_prob=1.5), "class_dropout_prob"),
    (dict(intermediate_size=62), "fractional MLP size"),
    (dict(id2label={0: "a"}), "id2label"),
    (dict(position_embedding_type="rotary"), r"position_embedding_type must be one of \['joint', 'factorized'\]"),
])
def test_invalid_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        MGNTConfig(**{**TINY, **overrides})


def test_unknown_width_raises():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    with pytest.raises(ValueError, match=r"width 12 is not one of nested_widths \[8, 16, 32\]"):
        model(ids, labels, width=12)


def test_bad_inputs_raise():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    with pytest.raises(ValueError, match="input_ids must be in"):
        model(ids.clamp(max=15) + 2, labels)
    with pytest.raises(ValueError, match="shape"):
        model(ids[:, :10], labels)
    with pytest.raises(ValueError, match="class_labels must be in"):
        model(ids, torch.tensor([4, 0, 0]))
    with pytest.raises(ValueError, match="LongTensor"):
        model(ids.float(), labels)


def test_cache_misuse_raises():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    active = torch.arange(4).expand(3, 4)
    with pytest.raises(ValueError, match="needs a cache"):
        model(ids, labels, active_positions=active)
    cache = model.new_cache(batch_size=3)
    with pytest.raises(ValueError, match="needs a built cache"):
        model(ids, labels, cache=cache, active_positions=active)
    model(ids, labels, width=8, cache=cache)
    with pytest.raises(ValueError, match="built at width 8 but width 16"):
        model(ids, labels, width=16, cache=cache, active_positions=active)
    with pytest.raises(ValueError, match="grid positions"):
        model(ids, labels, width=8, cache=cache, active_positions=active + 13)
    with pytest.raises(ValueError, match="holds 2 sequences"):
        model(ids, labels, cache=MGNTKVCache(model.config, batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        MGNTKVCache(model.config, batch_size=0)


# ---------------------------------------------------------------- width helpers and presets


def test_width_at_fraction_of_and_heads_at_convert_between_fractions_widths_and_heads():
    config = MGNTConfig(**TINY)
    assert [config.width_at(fraction) for fraction in (0.25, 0.5, 1, 1.0)] == [8, 16, 32, 32]
    assert config.width_at(0.25 + 5e-7 / 32) == 8  # within the tolerance of the scheduler's conversion
    assert [config.fraction_of(width) for width in config.nested_widths] == [0.25, 0.5, 1.0]
    assert [config.heads_at(width) for width in config.nested_widths] == [1, 2, 4]
    for width in config.nested_widths:
        assert config.width_at(config.fraction_of(width)) == width
    thirds = MGNTConfig(**{**TINY, "hidden_size": 48, "num_attention_heads": 6, "intermediate_size": 96,
                           "nested_widths": (16, 32, 48)})
    assert [thirds.width_at(fraction) for fraction in (1 / 3, 2 / 3, 1.0)] == [16, 32, 48]


@pytest.mark.parametrize("fraction", [0.125, 0.3, 0.25 + 1e-4, 2.0, 0.0, -0.25, float("nan"), True, "0.5"])
def test_width_at_refuses_fractions_that_are_not_nested(fraction):
    with pytest.raises(ValueError, match="fraction"):
        MGNTConfig(**TINY).width_at(fraction)


@pytest.mark.parametrize("width", [12, 64, None, 8.0, True])
def test_fraction_of_refuses_widths_that_are_not_nested(width):
    with pytest.raises(ValueError, match="nested_widths"):
        MGNTConfig(**TINY).fraction_of(width)


def test_width_at_agrees_with_the_schedulers_and_the_quality_rows_conversions():
    from mgnt_hf import MGNTScheduler

    config = MGNTConfig.from_preset("B")
    fractions = [1 / 8, 0.25, 0.5, 1.0, 0.125 + 1e-9, 0.3, 0.5 + 1e-3, 1 / 3]
    for fraction in fractions:
        scheduler = MGNTScheduler()
        scheduler.set_timesteps(width_schedule=[[fraction, 1]])
        try:
            expected = scheduler.step_widths(config.hidden_size, config.nested_widths)[0]
        except ValueError:
            with pytest.raises(ValueError):
                config.width_at(fraction)
        else:
            assert config.width_at(fraction) == expected
    for width in config.nested_widths:  # quality.py: `width-<w>` rows run fraction width / hidden_size
        assert config.fraction_of(width) == width / config.hidden_size


def test_from_preset_builds_the_imagenet_shaped_presets_with_overrides():
    config = MGNTConfig.from_preset("B")
    assert isinstance(config, MGNTConfig)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 16)
    assert (config.codebook_size, config.num_classes, config.token_grid) == (1024, 1000, (16, 16))
    assert config.nested_widths == (96, 192, 384, 768)
    small = MGNTConfig.from_preset("S", hidden_size=64, num_attention_heads=8, intermediate_size=128,
                                   token_grid=[4, 4], num_classes=3)
    assert small.nested_widths == (8, 16, 32, 64) and small.token_grid == (4, 4) and small.num_classes == 3
    assert MGNTConfig.from_preset("S", nested_widths=(256, 512)).nested_widths == (256, 512)
    with pytest.raises(ValueError, match=r"unknown transformer preset 'XXL'; allowed: \['B', 'L', 'S', 'XL'\]"):
        MGNTConfig.from_preset("XXL")
