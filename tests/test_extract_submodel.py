"""Extracting a nested width as its own model: `MGNTTransformer.extract_submodel`, `MGNTScheduler.for_submodel`
and `MGNTPipeline.extract_submodel` (the CLI's `mgnt extract` is in test_cli_edit.py)."""

import json

import pytest
import torch
from conftest import make_tiny_transformer, make_tiny_video_transformer
from fake_hub import fake_hub_server, run_client  # noqa: F401  (fixture import)
from transformers import AutoModel

from mgnt_hf import MGNTPipeline, MGNTScheduler, MGNTTransformer, MGNTVideoPipeline
from mgnt_hf.scheduling_mgnt import width_schedule_for_submodel

WIDTHS = (8, 16, 32, 64)  # conftest's tiny transformer, hidden size 64


def random_inputs(config, batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.mask_token_id + 1, (batch, config.num_grid_tokens), generator=generator)
    labels = torch.randint(0, config.null_class_id + 1, (batch,), generator=generator)
    return ids, labels


def tokens(pipe, labels=(0, 1, 2), seed=0, **kwargs):
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(labels))]
    return pipe(list(labels), generator=generators, output_type="latent", **kwargs)


# ---------------------------------------------------------------- the transformer


@pytest.mark.parametrize("width", WIDTHS)
def test_the_extracted_model_has_the_nested_shape_of_its_width(width):
    parent = make_tiny_transformer()
    config = parent.extract_submodel(width).config
    assert config.hidden_size == width
    assert config.num_attention_heads == width // 8 and config.head_dim == parent.config.head_dim
    assert config.intermediate_size == 2 * width
    assert config.nested_widths == tuple(w for w in WIDTHS if w <= width)
    assert config.id2label == parent.config.id2label
    assert (config.codebook_size, config.num_classes, config.token_grid, config.num_hidden_layers) == \
        (16, 3, (4, 4), 2)


@pytest.mark.parametrize("make_model", [make_tiny_transformer, make_tiny_video_transformer], ids=["image", "video"])
@pytest.mark.parametrize("width", WIDTHS)
def test_every_width_of_the_extracted_model_equals_the_parents_full_pass(make_model, width):
    parent = make_model()
    extracted = parent.extract_submodel(width)
    ids, labels = random_inputs(parent.config)
    for nested in extracted.config.nested_widths:
        torch.testing.assert_close(extracted(ids, labels, width=nested).logits,
                                   parent(ids, labels, width=nested).logits)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_width_of_the_extracted_model_equals_the_parents_cached_pass(width):
    parent = make_tiny_transformer()
    extracted = parent.extract_submodel(width)
    ids, labels = random_inputs(parent.config)
    active_positions = torch.tensor([[0, 5, 9], [3, 4, 15], [1, 2, 12]])
    for nested in extracted.config.nested_widths:
        logits = []
        for model in (parent, extracted):
            cache = model.new_cache(3)
            model(ids, labels, width=nested, cache=cache)  # builds the cache
            changed = ids.clone()
            changed.scatter_(1, active_positions, 3)  # the active tokens changed since the cache saw them
            logits.append(model(changed, labels, width=nested, cache=cache, active_positions=active_positions).logits)
        torch.testing.assert_close(logits[1], logits[0])


def test_the_extracted_weights_are_copies_of_the_leading_slices():
    parent = make_tiny_transformer()
    extracted = parent.extract_submodel(16)
    parent_state = parent.state_dict()
    for name, tensor in extracted.state_dict().items():
        block = tuple(slice(0, size) for size in tensor.shape)
        assert torch.equal(tensor, parent_state[name][block]), name
        assert tensor.is_contiguous(), name
    before = parent.output_head.weight.clone()
    with torch.no_grad():
        extracted.output_head.weight.add_(1.0)  # shares no storage with the parent
    assert torch.equal(parent.output_head.weight, before)
    assert extracted.output_head.weight.shape == (16, 16)
    assert sum(p.numel() for p in extracted.parameters()) < sum(p.numel() for p in parent.parameters())


def test_the_extracted_model_keeps_dtype_attention_kernel_and_mode():
    parent = make_tiny_transformer(attn_implementation="eager").to(torch.bfloat16).train()
    extracted = parent.extract_submodel(32)
    assert extracted.dtype == torch.bfloat16
    assert extracted.config._attn_implementation == "eager"
    assert extracted.training and all(p.requires_grad for p in extracted.parameters())
    assert not parent.eval().extract_submodel(32).training


def test_the_full_width_extracts_an_equal_copy():
    parent = make_tiny_transformer()
    copy = parent.extract_submodel(64)
    assert copy.config.to_diff_dict() == parent.config.to_diff_dict()
    ids, labels = random_inputs(parent.config)
    assert torch.equal(copy(ids, labels).logits, parent(ids, labels).logits)


@pytest.mark.parametrize("width", [None, 12, 128, 16.0, True])
def test_extracting_a_width_that_is_not_nested_raises(width):
    with pytest.raises(ValueError, match="is not one of nested_widths"):
        make_tiny_transformer().extract_submodel(width)


def test_the_extracted_model_saves_and_loads_with_identical_logits(tmp_path):
    extracted = make_tiny_transformer().extract_submodel(32)
    extracted.save_pretrained(tmp_path / "width-32")
    saved_config = json.loads((tmp_path / "width-32" / "config.json").read_text())
    assert (saved_config["hidden_size"], saved_config["nested_widths"]) == (32, [8, 16, 32])
    loaded = AutoModel.from_pretrained(tmp_path / "width-32").eval()
    assert type(loaded) is MGNTTransformer
    ids, labels = random_inputs(extracted.config)
    for width in (8, 16, 32):
        assert torch.equal(loaded(ids, labels, width=width).logits, extracted(ids, labels, width=width).logits)


# ---------------------------------------------------------------- the width schedule


def test_a_width_schedule_is_re_expressed_in_the_extracted_hidden_size():
    default = [[0.125, 1], [0.25, 4], [0.5, 4], [1.0, 3]]
    assert width_schedule_for_submodel(default, 64, 64) == default
    assert width_schedule_for_submodel([[0.125, 1], [0.25, 4], [0.5, 4]], 64, 32) == [[0.25, 1], [0.5, 4], [1.0, 4]]
    assert width_schedule_for_submodel("half-then-full", 64, 64) == [[0.5, 6], [1.0, 6]]


def test_a_segment_wider_than_the_extracted_width_is_refused_unless_clipped():
    with pytest.raises(ValueError, match=r"segment \[0.5, 4\] runs width 32 of hidden_size 64, wider than the "
                                         r"extracted width 16; allowed: segments of fraction <= 0.25, or clip=True"):
        width_schedule_for_submodel("magnets", 64, 16)
    # clipped segments run at the extracted width; neighbours at the same width are merged
    assert width_schedule_for_submodel("magnets", 64, 16, clip=True) == [[0.5, 1], [1.0, 11]]


def budget_entry(max_gflops, width_schedule, fid):
    return dict(max_gflops_per_image=max_gflops, width_schedule=width_schedule, num_inference_steps=8,
                use_cache=True, gflops_per_image=max_gflops / 2, classifier_fid=fid, class_accuracy=0.9)


def test_the_scheduler_for_a_submodel_keeps_its_settings_and_the_budget_entries_that_fit():
    scheduler = MGNTScheduler(width_schedule=[[0.25, 6], [0.5, 6]], temperature=0.5, guidance_scale=3.0,
                              budget_schedules=[budget_entry(1.0, [[0.25, 8]], 9.0),
                                                budget_entry(2.0, [[0.25, 4], [1.0, 4]], 5.0)])
    converted = scheduler.for_submodel(64, 32)
    assert converted.config.width_schedule == [[0.5, 6], [1.0, 6]]
    assert (converted.config.temperature, converted.config.guidance_scale) == (0.5, 3.0)
    # the measured entry that fits is the same decode, re-expressed; the one wider than 32 was never measured here
    assert converted.config.budget_schedules == [budget_entry(1.0, [[0.5, 8]], 9.0)]
    assert scheduler.for_submodel(64, 8, clip=True).config.budget_schedules is None
    assert scheduler.config.width_schedule == [[0.25, 6], [0.5, 6]]  # the original is unchanged


# ---------------------------------------------------------------- the pipeline


def test_the_extracted_pipeline_decodes_as_the_parent_at_the_same_widths(tiny_pipeline):
    extracted = tiny_pipeline.extract_submodel(32, clip=True)
    assert extracted.scheduler.config.width_schedule == [[0.25, 1], [0.5, 4], [1.0, 7]]
    assert extracted.vqvae is tiny_pipeline.vqvae
    assert type(extracted) is MGNTPipeline
    ours = tokens(extracted)
    parents = tokens(tiny_pipeline, width_schedule=[[0.125, 1], [0.25, 4], [0.5, 7]])
    assert ours.widths == parents.widths == [8] + [16] * 4 + [32] * 7
    assert ours.full_passes == parents.full_passes
    assert torch.equal(ours.images, parents.images)
    assert ours.gflops_per_image == parents.gflops_per_image  # the same matmuls at the same widths


def test_extracting_a_pipeline_whose_schedule_is_wider_raises_without_clip(tiny_pipeline):
    with pytest.raises(ValueError, match="wider than the extracted width 32.*or clip=True"):
        tiny_pipeline.extract_submodel(32)
    with pytest.raises(ValueError, match="clip must be True or False"):
        tiny_pipeline.extract_submodel(32, clip="yes")


def test_the_extracted_video_pipeline_is_a_video_pipeline(tiny_video_pipeline):
    extracted = tiny_video_pipeline.extract_submodel(32, clip=True)
    assert type(extracted) is MGNTVideoPipeline
    assert extracted.transformer.config.token_grid == (2, 4, 4)


def test_the_extracted_pipeline_saves_pushes_and_loads_with_identical_tokens(tiny_pipeline, fake_hub_server,
                                                                              tmp_path):
    # Runs the real huggingface_hub client against tests/fake_hub.py; LFS/Xet transfer and auth are not covered.
    extracted = tiny_pipeline.extract_submodel(16, clip=True)
    extracted.save_pretrained(tmp_path / "width-16")
    expected = tokens(extracted).images
    loaded = MGNTPipeline.from_pretrained(tmp_path / "width-16")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.transformer.config.hidden_size == 16
    assert torch.equal(tokens(loaded).images, expected)
    result = run_client(f"""
        import json
        import torch
        from mgnt_hf import MGNTPipeline
        MGNTPipeline.from_pretrained({str(tmp_path / "width-16")!r}).push_to_hub("user/tiny-width-16")
        pulled = MGNTPipeline.from_pretrained("user/tiny-width-16")
        pulled.set_progress_bar_config(disable=True)
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        ids = pulled([0, 1, 2], generator=generators, output_type="latent").images
        print(json.dumps([pulled.transformer.config.hidden_size, ids.tolist()]))
    """, fake_hub_server, tmp_path)
    hidden_size, pulled = json.loads(result.stdout.strip().splitlines()[-1])
    assert hidden_size == 16 and pulled == expected.tolist()
    assert "transformer/model.safetensors" in fake_hub_server.list_files("user/tiny-width-16")
    assert fake_hub_server.unhandled == []
