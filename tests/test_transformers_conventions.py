"""MGNTTransformer follows transformers' own model conventions (issue 14).

Tiny random models, seconds each: hidden states and attention weights through transformers' output-recording
machinery, the "sdpa"/"eager" attention implementations, a masked-LM style `labels` -> `loss`, `num_labels`
kept equal to `num_classes`, torch.export / torch.compile, and attention slicing (diffusers'
`enable_attention_slicing`).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as transformers_logging

from mgnt_hf import MGNTConfig, MGNTTransformer
from mgnt_hf.modeling_mgnt import MGNTAttention

TINY = dict(codebook_size=16, num_classes=3, token_grid=(4, 4), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, nested_widths=(8, 16, 32))
WIDTHS = TINY["nested_widths"]
LENGTH = 1 + 16  # class token + grid tokens


def tiny_model(seed=0, attn_implementation=None, **overrides):
    torch.manual_seed(seed)
    config = MGNTConfig(**{**TINY, **overrides})
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    return MGNTTransformer(config).eval()


def random_inputs(config, batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.codebook_size + 1, (batch, config.num_grid_tokens), generator=generator)
    labels = torch.randint(0, config.num_classes + 1, (batch,), generator=generator)
    return ids, labels


def active_positions(batch=3, count=5):
    return torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(i))[:count] for i in range(batch)])


def gather_rows(tensor, positions, dim=1):
    """`tensor[b, ..., positions[b], ...]` along `dim` (1: hidden states `[B, L, D]`; 2: weights `[B, h, L, S]`)."""
    batch, count = positions.shape
    index = positions.view(batch, *([1] * (dim - 1)), count, *([1] * (tensor.dim() - dim - 1)))
    sizes = [-1 if i in (0, dim) else size for i, size in enumerate(tensor.shape)]
    return torch.gather(tensor, dim, index.expand(*sizes))


class SDPASpy:
    """Counts `F.scaled_dot_product_attention` calls and the query lengths they ran."""

    def __init__(self, monkeypatch, forbid=False):
        self.query_lengths = []
        original = F.scaled_dot_product_attention

        def spy(query, *args, **kwargs):
            if forbid:
                raise AssertionError("scaled_dot_product_attention was called")
            self.query_lengths.append(query.shape[-2])
            return original(query, *args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)


# ---------------------------------------------------------------- 1. hidden states and attention weights


@pytest.mark.parametrize("width", WIDTHS)
def test_full_pass_returns_the_embeddings_output_and_every_layer_output(width):
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    output = model(ids, labels, width=width, output_hidden_states=True)
    assert len(output.hidden_states) == model.config.num_hidden_layers + 1
    assert all(state.shape == (3, LENGTH, width) for state in output.hidden_states)
    torch.testing.assert_close(output.hidden_states[0], model.embeddings(ids, labels, width), rtol=0, atol=0)
    # The last one is the last layer's output: the final LayerNorm and head of its grid rows give the logits.
    final = F.layer_norm(output.hidden_states[-1][:, 1:], (width,), model.final_norm.weight[:width],
                         model.final_norm.bias[:width], model.final_norm.eps)
    logits = F.linear(final, model.output_head.weight[:, :width], model.output_head.bias)
    torch.testing.assert_close(logits, output.logits, rtol=0, atol=0)
    assert torch.equal(output.logits, model(ids, labels, width=width).logits)
    assert model(ids, labels, width=width).hidden_states is None


@pytest.mark.parametrize("width", WIDTHS)
def test_cached_pass_returns_the_hidden_states_and_attentions_of_the_active_positions(width):
    model = tiny_model(attn_implementation="eager")
    ids, labels = random_inputs(model.config)
    active = active_positions()
    cache = model.new_cache(batch_size=3)
    full = model(ids, labels, width=width, cache=cache, output_hidden_states=True, output_attentions=True)
    cached = model(ids, labels, width=width, cache=cache, active_positions=active, output_hidden_states=True,
                   output_attentions=True)
    heads = model.config.heads_at(width)
    assert [state.shape for state in cached.hidden_states] == [(3, 5, width)] * 3
    assert [weights.shape for weights in cached.attentions] == [(3, heads, 5, LENGTH)] * 2
    for cached_state, full_state in zip(cached.hidden_states, full.hidden_states):
        torch.testing.assert_close(cached_state, gather_rows(full_state, active + 1), rtol=1e-5, atol=1e-5)
    for cached_weights, full_weights in zip(cached.attentions, full.attentions):
        torch.testing.assert_close(cached_weights, gather_rows(full_weights, active + 1, dim=2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", WIDTHS)
def test_eager_attention_weights_are_a_softmax_over_all_positions(width):
    model = tiny_model(attn_implementation="eager")
    ids, labels = random_inputs(model.config)
    output = model(ids, labels, width=width, output_attentions=True)
    assert output.hidden_states is None
    assert len(output.attentions) == model.config.num_hidden_layers
    for weights in output.attentions:
        assert weights.shape == (3, model.config.heads_at(width), LENGTH, LENGTH)
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_config_output_flags_and_return_dict_follow_transformers():
    model = tiny_model(attn_implementation="eager")
    ids, labels = random_inputs(model.config)
    model.config.output_hidden_states = True
    model.config.output_attentions = True
    output = model(ids, labels)
    assert len(output.hidden_states) == 3 and len(output.attentions) == 2
    assert model(ids, labels, output_hidden_states=False).hidden_states is None  # the argument wins
    logits, hidden_states, attentions = model(ids, labels, return_dict=False)
    assert torch.equal(logits, output.logits) and len(hidden_states) == 3 and len(attentions) == 2
    model.config.output_hidden_states = model.config.output_attentions = False
    model.config.return_dict = False
    assert isinstance(model(ids, labels), tuple) and len(model(ids, labels)) == 1
    assert torch.equal(model(ids, labels)[0], output.logits)


def test_output_attentions_with_sdpa_warns_and_returns_no_weights_like_transformers():
    model = tiny_model()
    assert model.config._attn_implementation == "sdpa"
    ids, labels = random_inputs(model.config)
    logger = transformers_logging.get_logger("transformers.integrations.sdpa_attention")
    logger.warning_once.cache_clear()
    with CaptureLogger(logger) as captured:
        output = model(ids, labels, output_attentions=True)
    assert "does not support `output_attentions=True`" in captured.out
    assert output.attentions == ()
    with pytest.raises(ValueError, match="output_attentions"):  # transformers' config refuses it outright
        model.config.output_attentions = True


def test_unknown_forward_arguments_still_raise():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    with pytest.raises(ValueError, match=r"unexpected arguments to MGNTTransformer.forward: \['attention_mask'\]"):
        model(ids, labels, attention_mask=torch.ones(3, 16))


# ---------------------------------------------------------------- 2. attention implementations


@pytest.mark.parametrize("width", WIDTHS)
def test_eager_and_sdpa_agree_at_every_width_with_and_without_the_cache(width):
    sdpa, eager = tiny_model(), tiny_model(attn_implementation="eager")
    ids, labels = random_inputs(sdpa.config)
    active = active_positions()
    caches = {}
    for name, model in (("sdpa", sdpa), ("eager", eager)):
        caches[name] = model.new_cache(batch_size=3)
        full = model(ids, labels, width=width, cache=caches[name], output_hidden_states=True)
        cached = model(ids.flip(1), labels, width=width, cache=caches[name], active_positions=active)
        caches[name] = (full, cached, caches[name])
    (sdpa_full, sdpa_cached, sdpa_cache), (eager_full, eager_cached, eager_cache) = caches["sdpa"], caches["eager"]
    torch.testing.assert_close(eager_full.logits, sdpa_full.logits, rtol=1e-5, atol=1e-5)
    for eager_state, sdpa_state in zip(eager_full.hidden_states, sdpa_full.hidden_states):
        torch.testing.assert_close(eager_state, sdpa_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eager_cached.logits, sdpa_cached.logits, rtol=1e-5, atol=1e-5)
    heads = sdpa.config.heads_at(width)
    torch.testing.assert_close(eager_cache.keys[:, :, :heads], sdpa_cache.keys[:, :, :heads], rtol=1e-5, atol=1e-5)


def test_from_pretrained_with_eager_runs_the_eager_kernel_and_sdpa_by_default(tmp_path, monkeypatch):
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    model.save_pretrained(tmp_path)
    default = MGNTTransformer.from_pretrained(tmp_path).eval()
    eager = MGNTTransformer.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert default.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"

    spy = SDPASpy(monkeypatch)
    reference = default(ids, labels, width=16).logits
    assert spy.query_lengths == [LENGTH] * model.config.num_hidden_layers  # the default path is SDPA

    SDPASpy(monkeypatch, forbid=True)
    output = eager(ids, labels, width=16, output_attentions=True)
    torch.testing.assert_close(output.logits, reference, rtol=1e-5, atol=1e-5)
    assert len(output.attentions) == model.config.num_hidden_layers

    default.set_attn_implementation("eager")
    torch.testing.assert_close(default(ids, labels, width=16).logits, reference, rtol=1e-5, atol=1e-5)


def test_attention_implementations_the_model_does_not_support_are_refused(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    for name in ("flash_attention_2", "flex_attention"):
        with pytest.raises((ValueError, ImportError)):
            MGNTTransformer.from_pretrained(tmp_path, attn_implementation=name)


# ---------------------------------------------------------------- 3. labels -> loss


def scored_labels(ids, seed=2):
    """Targets in [0, codebook_size) at about half the positions, -100 elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 16, ids.shape, generator=generator)
    return torch.where(torch.rand(ids.shape, generator=generator) < 0.5, targets, torch.full_like(targets, -100))


@pytest.mark.parametrize("width", WIDTHS)
def test_labels_give_the_cross_entropy_over_the_scored_positions(width):
    model = tiny_model()
    ids, class_labels = random_inputs(model.config)
    targets = scored_labels(ids)
    output = model(ids, class_labels, width=width, labels=targets)
    scored = targets != -100
    expected = F.cross_entropy(output.logits[scored], targets[scored])
    torch.testing.assert_close(output.loss, expected)
    assert torch.equal(output.logits, model(ids, class_labels, width=width).logits)
    assert model(ids, class_labels, width=width).loss is None
    grid_shaped = model(ids.view(3, 4, 4), class_labels, width=width, labels=targets.view(3, 4, 4))
    torch.testing.assert_close(grid_shaped.loss, expected)
    loss, logits = model(ids, class_labels, width=width, labels=targets, return_dict=False)
    torch.testing.assert_close(loss, expected) and torch.testing.assert_close(logits, output.logits)
    summed = model(ids, class_labels, width=width, labels=targets, num_items_in_batch=torch.tensor(7))
    torch.testing.assert_close(summed.loss, F.cross_entropy(output.logits[scored], targets[scored],
                                                            reduction="sum") / 7)


def test_labels_of_a_cached_pass_are_those_of_its_active_positions():
    model = tiny_model()
    ids, class_labels = random_inputs(model.config)
    targets = ids.clamp(max=15)
    cache = model.new_cache(batch_size=3)
    model(ids, class_labels, width=16, cache=cache)
    active = active_positions()
    output = model(ids, class_labels, width=16, cache=cache, active_positions=active, labels=targets)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits.flatten(0, 1),
                                                            torch.gather(targets, 1, active).flatten()))


def test_loss_trains_only_the_leading_slices_and_checkpointing_gives_the_same_gradients():
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            # transformers is renaming gradient_checkpointing_enable; use whichever this version has.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
        ids, class_labels = random_inputs(model.config)
        model(ids, class_labels, width=16, labels=scored_labels(ids)).loss.backward()
        gradients.append(model.layers[0].mlp.fc1.weight.grad)
        assert torch.count_nonzero(model.output_head.weight.grad[:, 16:]) == 0
    torch.testing.assert_close(gradients[0], gradients[1])


@pytest.mark.parametrize("labels, message", [
    (torch.full((3, 16), 16), "labels must be codebook ids"),
    (torch.zeros(3, 10, dtype=torch.long), "labels must have shape"),
    (torch.zeros(2, 16, dtype=torch.long), "batch size"),
    (torch.zeros(3, 16), "labels must be a LongTensor"),
])
def test_bad_labels_raise(labels, message):
    model = tiny_model()
    ids, class_labels = random_inputs(model.config)
    with pytest.raises(ValueError, match=message):
        model(ids, class_labels, labels=labels)


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, ids, class_labels, labels):
        self.rows = [dict(input_ids=i, class_labels=c, labels=t) for i, c, t in zip(ids, class_labels, labels)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def test_trainer_trains_the_model_on_its_loss(tmp_path):
    model = tiny_model().train()
    ids, class_labels = random_inputs(model.config, batch=8)
    dataset = TokenDataset(ids, class_labels, scored_labels(ids))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2,
                             report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True)
    before = model.output_head.weight.detach().clone()
    result = Trainer(model=model, args=args, train_dataset=dataset).train()
    assert math.isfinite(result.training_loss)
    assert not torch.equal(model.output_head.weight.detach(), before)


# ---------------------------------------------------------------- 4. num_labels == num_classes


def test_num_labels_is_num_classes_a_conflicting_one_is_refused_and_assigning_it_resizes(tmp_path):
    config = MGNTConfig(**TINY)
    assert config.num_labels == 3 and config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert MGNTConfig(**TINY, num_labels=3).num_labels == 3
    with pytest.raises(ValueError, match=r"num_labels \(5\) must equal num_classes \(3\)"):
        MGNTConfig(**TINY, num_labels=5)
    named = MGNTConfig(**TINY, id2label={0: "a", 1: "b", 2: "c"})
    assert named.num_labels == 3 and named.id2label[2] == "c"
    named.save_pretrained(tmp_path)
    assert MGNTConfig.from_pretrained(tmp_path).id2label == {0: "a", 1: "b", 2: "c"}

    # transformers' idiom for a new label set keeps the two names of the count together.
    config.num_labels = 2
    assert (config.num_classes, config.num_labels, config.null_class_id) == (2, 2, 2)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    resized = MGNTConfig.from_pretrained(tmp_path, num_labels=4)
    assert resized.num_classes == 4 and len(resized.id2label) == 4
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="num_labels must be a positive integer"):
            MGNTConfig(**TINY).num_labels = bad


def test_the_class_count_defaults_to_the_number_of_names_given():
    fields = {key: value for key, value in TINY.items() if key != "num_classes"}
    assert MGNTConfig(**fields, id2label={0: "cat", 1: "dog"}).num_classes == 2
    assert MGNTConfig(**fields).num_classes == 1000
    with pytest.raises(ValueError, match="id2label has 2 entries but num_classes is 3"):
        MGNTConfig(**fields, num_classes=3, id2label={0: "cat", 1: "dog"})


def test_a_model_with_another_class_count_loads_with_ignore_mismatched_sizes(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    with pytest.raises((ValueError, RuntimeError)):
        MGNTTransformer.from_pretrained(tmp_path, num_labels=5)
    resized = MGNTTransformer.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert resized.config.num_classes == 5 and resized.embeddings.class_embeddings.weight.shape[0] == 6
    torch.testing.assert_close(resized.embeddings.token_embeddings.weight, model.embeddings.token_embeddings.weight)


# ---------------------------------------------------------------- 5. torch.export and torch.compile


def test_torch_export_of_a_full_forward():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    exported = torch.export.export(model, (ids, labels), {"width": 16})
    other_ids, other_labels = random_inputs(model.config, seed=5)
    torch.testing.assert_close(exported.module()(other_ids, other_labels, width=16).logits,
                               model(other_ids, other_labels, width=16).logits, rtol=0, atol=0)


def test_torch_export_of_a_cached_forward_reads_and_writes_the_cache():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    active = active_positions()
    export_cache, eager_cache = model.new_cache(batch_size=3), model.new_cache(batch_size=3)
    model(ids, labels, width=16, cache=export_cache)
    model(ids, labels, width=16, cache=eager_cache)
    exported = torch.export.export(model, (ids.flip(1), labels),
                                   {"width": 16, "cache": export_cache, "active_positions": active})
    expected = model(ids.flip(1), labels, width=16, cache=eager_cache, active_positions=active).logits
    output = exported.module()(ids.flip(1), labels, width=16, cache=export_cache, active_positions=active)
    torch.testing.assert_close(output.logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(export_cache.keys[:, :, :2], eager_cache.keys[:, :, :2], rtol=0, atol=0)


def test_value_checks_run_eagerly_but_not_when_traced():
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    with pytest.raises(ValueError, match="input_ids must be in"):
        model(ids + 20, labels)
    torch.export.export(model, (ids, labels))  # traced: the data-dependent checks are skipped


def test_torch_compile_fullgraph_of_a_full_forward():
    torch._dynamo.reset()
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    targets = scored_labels(ids)
    output = torch.compile(model, fullgraph=True, backend="aot_eager")(ids, labels, width=16, labels=targets)
    reference = model(ids, labels, width=16, labels=targets)
    torch.testing.assert_close(output.logits, reference.logits)
    torch.testing.assert_close(output.loss, reference.loss)


def test_torch_compile_fullgraph_with_recorded_outputs():
    torch._dynamo.reset()
    model = tiny_model(attn_implementation="eager")
    ids, labels = random_inputs(model.config)
    # transformers installs its output-recording hooks at the first eager forward that asks for outputs (a
    # fullgraph compile cannot install them: they are installed under a lock).
    reference = model(ids, labels, width=16, output_hidden_states=True, output_attentions=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    output = compiled(ids, labels, width=16, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(output.logits, reference.logits)
    assert len(output.hidden_states) == 3 and len(output.attentions) == 2
    torch.testing.assert_close(output.hidden_states[-1], reference.hidden_states[-1])
    torch.testing.assert_close(output.attentions[-1], reference.attentions[-1])


# ---------------------------------------------------------------- 6. attention slicing


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("slice_size", ["auto", "max", 1, 5, 16, LENGTH])
def test_sliced_attention_equals_unsliced_with_and_without_the_cache(slice_size, attn_implementation):
    model = tiny_model(attn_implementation=attn_implementation)
    ids, labels = random_inputs(model.config)
    active = active_positions()
    eager = attn_implementation == "eager"
    results = []
    for size in (None, slice_size):
        model.set_attention_slice(size)
        cache = model.new_cache(batch_size=3)
        full = model(ids, labels, width=16, cache=cache, output_attentions=eager)
        cached = model(ids.flip(1), labels, width=16, cache=cache, active_positions=active, output_attentions=eager)
        results.append((full, cached))
    (full, cached), (sliced_full, sliced_cached) = results
    torch.testing.assert_close(sliced_full.logits, full.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sliced_cached.logits, cached.logits, rtol=1e-5, atol=1e-5)
    if eager:
        sliced_weights = sliced_full.attentions + sliced_cached.attentions
        for sliced, unsliced in zip(sliced_weights, full.attentions + cached.attentions):
            torch.testing.assert_close(sliced, unsliced, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("slice_size, expected", [
    (None, [LENGTH]), ("auto", [9, 8]), ("max", [1] * LENGTH), (5, [5, 5, 5, 2]), (LENGTH, [LENGTH]),
])
def test_attention_slicing_really_runs_the_queries_in_slices(slice_size, expected, monkeypatch):
    model = tiny_model()
    ids, labels = random_inputs(model.config)
    model.set_attention_slice(slice_size)
    assert {module.slice_size for module in model.modules() if isinstance(module, MGNTAttention)} == \
        {1 if slice_size == "max" else slice_size}
    spy = SDPASpy(monkeypatch)
    model(ids, labels)
    assert spy.query_lengths == expected * model.config.num_hidden_layers


@pytest.mark.parametrize("slice_size", [0, -1, LENGTH + 1, "half", 2.5, True, [4, 4]])
def test_invalid_attention_slice_sizes_raise(slice_size):
    with pytest.raises(ValueError, match="attention slice_size must be 'auto', 'max', None or an int"):
        tiny_model().set_attention_slice(slice_size)


def test_sliced_attention_keeps_the_analytic_flops():
    from torch.utils.flop_counter import FlopCounterMode

    from mgnt_hf import count_forward_flops

    model = tiny_model()
    model.set_attention_slice(5)
    ids, labels = random_inputs(model.config, batch=2)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids, labels, width=16)
    assert counter.get_total_flops() == pytest.approx(count_forward_flops(model.config, 16, batch_size=2), rel=0.02)


def test_pipeline_enable_attention_slicing_slices_the_transformer_and_keeps_the_tokens(tiny_pipeline):
    def tokens():
        return tiny_pipeline([0, 2], generator=torch.Generator().manual_seed(0), output_type="latent",
                             num_inference_steps=6).images

    def slice_sizes():
        modules = tiny_pipeline.transformer.modules()
        return {module.slice_size for module in modules if isinstance(module, MGNTAttention)}

    reference = tokens()
    assert slice_sizes() == {None}
    tiny_pipeline.enable_attention_slicing()
    assert slice_sizes() == {"auto"}
    assert torch.equal(torch.as_tensor(tokens()), torch.as_tensor(reference))
    tiny_pipeline.enable_attention_slicing("max")
    assert slice_sizes() == {1}
    assert torch.equal(torch.as_tensor(tokens()), torch.as_tensor(reference))
    tiny_pipeline.disable_attention_slicing()
    assert slice_sizes() == {None}
    with pytest.raises(ValueError, match="attention slice_size"):
        tiny_pipeline.enable_attention_slicing(1000)
