"""The MaskGIT training objective with nested joint training and online distillation."""

import math

import pytest
import torch

from mgnt_hf import MGNTConfig, MGNTTransformer
from mgnt_hf.nested_training import (MGNTNestedTrainingObjective, distillation_kl, drop_class_labels,
                                     random_training_mask)

TINY = dict(codebook_size=16, num_classes=3, token_grid=(4, 4), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, nested_widths=(8, 16, 32), class_dropout_prob=0.0)


def tiny_objective(**kwargs):
    torch.manual_seed(0)
    return MGNTNestedTrainingObjective(MGNTTransformer(MGNTConfig(**TINY)), **kwargs)


def test_training_mask_masks_ceil_cosine_ratio_tokens_per_example():
    generator = torch.Generator().manual_seed(0)
    mask = random_training_mask(64, 16, "cosine", generator=generator)
    generator = torch.Generator().manual_seed(0)
    progress = torch.rand(64, generator=generator)
    expected = torch.ceil(torch.cos(progress * math.pi / 2) * 16).clamp(1, 16)
    assert torch.equal(mask.sum(1), expected.long())


def test_training_mask_positions_are_spread_over_the_grid():
    mask = random_training_mask(2000, 16, "linear", generator=torch.Generator().manual_seed(1))
    frequency = mask.float().mean(0)
    assert frequency.min() > 0.4 and frequency.max() < 0.6


def test_class_labels_are_dropped_to_the_null_class_at_the_given_rate():
    labels = torch.zeros(4000, dtype=torch.long)
    dropped = drop_class_labels(labels, 0.25, null_class_id=3, generator=torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 3}
    assert abs((dropped == 3).float().mean().item() - 0.25) < 0.03
    assert torch.equal(drop_class_labels(labels, 0.0, 3), labels)


def test_distillation_kl_is_zero_for_identical_predictions_and_positive_otherwise():
    logits = torch.randn(5, 16)
    assert distillation_kl(logits, logits, 2.0).abs() < 1e-6
    assert distillation_kl(logits, torch.randn(5, 16), 2.0) > 0


def test_every_width_gets_a_loss_and_the_total_is_their_sum_without_distillation():
    objective = tiny_objective(distillation_weight=0.0)
    ids = torch.randint(0, 16, (6, 16))
    labels = torch.randint(0, 3, (6,))
    torch.manual_seed(3)
    output = objective(ids, labels)
    assert sorted(output.width_losses) == [8, 16, 32]
    assert output.distillation_losses == {}
    torch.testing.assert_close(output.loss.detach(), sum(output.width_losses.values()))


def test_width_loss_weights_scale_each_widths_term_and_leave_reported_losses_unweighted():
    ids = torch.randint(0, 16, (6, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 3, (6,), generator=torch.Generator().manual_seed(2))
    plain = tiny_objective(distillation_weight=0.5)(ids, labels, generator=torch.Generator().manual_seed(3))
    weights = {8: 3.0, 16: 0.5, 32: 2.0}
    weighted = tiny_objective(distillation_weight=0.5, width_loss_weights=[3.0, 0.5, 2.0])(
        ids, labels, generator=torch.Generator().manual_seed(3))
    assert weighted.width_losses == plain.width_losses
    per_width = {w: plain.width_losses[w] + 0.5 * plain.distillation_losses.get(w, 0.0) for w in weights}
    torch.testing.assert_close(weighted.loss.detach(), sum(weights[w] * per_width[w] for w in weights))


def test_smaller_widths_distil_from_the_full_width():
    objective = tiny_objective(distillation_weight=0.5, distillation_temperature=2.0)
    output = objective(torch.randint(0, 16, (6, 16)), torch.randint(0, 3, (6,)))
    assert sorted(output.distillation_losses) == [8, 16]
    expected = sum(output.width_losses.values()) + 0.5 * sum(output.distillation_losses.values())
    torch.testing.assert_close(output.loss.detach(), expected)


def test_sampled_widths_run_the_full_width_and_one_smaller_width():
    objective = tiny_objective(widths_per_step="sampled")
    drawn = set()
    for seed in range(20):
        widths = objective.widths_for_step(torch.Generator().manual_seed(seed))
        assert widths[0] == 32 and len(widths) == 2
        drawn.add(widths[1])
    assert drawn == {8, 16}


def test_sampled_next_width_distillation_runs_the_teacher_without_gradient():
    objective = tiny_objective(widths_per_step="sampled", distill_from="next")
    objective.widths_for_step = lambda generator=None: [32, 8]
    output = objective(torch.randint(0, 16, (4, 16)), torch.randint(0, 3, (4,)))
    assert sorted(output.width_losses) == [8, 32]
    assert sorted(output.distillation_losses) == [8]


def test_the_loss_of_every_width_falls_on_a_fixed_set():
    objective = tiny_objective(distillation_weight=0.5)
    torch.manual_seed(0)
    ids = torch.randint(0, 16, (8, 16))
    labels = torch.arange(8) % 3
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    history = []
    for step in range(120):
        output = objective(ids, labels, generator=torch.Generator().manual_seed(step % 4))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        history.append({w: l.item() for w, l in output.width_losses.items()})
    for width in (8, 16, 32):
        first = sum(h[width] for h in history[:4]) / 4
        last = sum(h[width] for h in history[-4:]) / 4
        assert last < 0.7 * first, (width, first, last)


@pytest.mark.parametrize("kwargs, message", [
    (dict(distill_from="teacher"), "distill_from"),
    (dict(widths_per_step="some"), "widths_per_step"),
    (dict(mask_schedule="square"), "mask_schedule"),
    (dict(distillation_weight=-1.0), "distillation_weight"),
    (dict(distillation_temperature=0.0), "distillation_temperature"),
    (dict(width_loss_weights=[1.0, 1.0]), "one weight per nested width"),
    (dict(width_loss_weights=[1.0, 0.0, 1.0]), r"width_loss_weights\[1\]"),
    (dict(width_loss_weights="1 1 1"), "width_loss_weights"),
])
def test_bad_objective_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_objective(**kwargs)


def test_null_class_is_refused_as_a_training_label():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        tiny_objective()(torch.randint(0, 16, (2, 16)), torch.tensor([0, 3]))
