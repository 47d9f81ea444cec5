"""The MaskGIT objective with nested joint training (docs/design.md, "Training").

Per example: draw `r ~ U(0, 1)`, mask `ceil(ratio(r) * N)` random positions, cross-entropy on
the masked positions; replace the class label by the null class with probability
`class_dropout_prob`. Nested joint training: the full width learns from the ground truth; each
smaller width learns from the ground truth plus online distillation (KL) from the detached
predictions of the full width (or of the next larger width).

`MGNTNestedTrainingObjective` is an `nn.Module` that runs every width inside one `forward`, so
`accelerate`/DDP sees one forward per backward and reduces the shared weights' gradients once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .masking import check_mask_schedule, training_mask_counts
from .modeling_mgnt import MGNTTransformer
from .utils.checks import check_choice, check_finite_number

WIDTHS_PER_STEP = ("all", "sampled")
DISTILL_FROM = ("full", "next")


def random_training_mask(batch_size: int, num_tokens: int, mask_schedule: str = "cosine",
                         device: torch.device | str | None = None,
                         generator: torch.Generator | None = None,
                         num_fixed_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask `[B, N]`: example b masks `ceil(ratio(r_b) * N)` random positions, `r_b ~ U(0, 1)`.

    With `num_fixed_tokens [B]` (frame prediction: the context frames' tokens come first in the grid), the
    first `num_fixed_tokens[b]` positions are never masked and the count is taken over the other
    `N - num_fixed_tokens[b]` (each example must keep at least one maskable position)."""
    progress = torch.rand(batch_size, device=device, generator=generator)
    maskable = num_tokens if num_fixed_tokens is None else num_tokens - num_fixed_tokens.to(progress.device)
    counts = training_mask_counts(mask_schedule, progress, maskable)  # [B]
    scores = torch.rand(batch_size, num_tokens, device=device, generator=generator)
    if num_fixed_tokens is not None:
        # Scores are < 1, so fixed positions rank after every maskable one and are never among the `count` lowest.
        fixed = torch.arange(num_tokens, device=scores.device)[None, :] < num_fixed_tokens.to(scores.device)[:, None]
        scores = scores.masked_fill(fixed, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a random permutation per row
    return ranks < counts[:, None]


def drop_class_labels(class_labels: torch.Tensor, drop_prob: float, null_class_id: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the null class with probability `drop_prob` (classifier-free guidance)."""
    if drop_prob <= 0:
        return class_labels
    dropped = torch.rand(class_labels.shape, device=class_labels.device, generator=generator) < drop_prob
    return torch.where(dropped, torch.full_like(class_labels, null_class_id), class_labels)


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`T^2 * KL(softmax(teacher / T) || softmax(student / T))`, averaged over rows `[M, V]`."""
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


@dataclass
class NestedTrainingOutput(ModelOutput):
    """
    Args:
        loss: the sum over the widths that ran of their losses (scalar).
        width_losses: `{width: cross-entropy on masked tokens}` for every width that ran (detached).
        distillation_losses: `{width: KL to the teacher}` for every smaller width that ran (detached).
        masked_accuracy: token accuracy of the full width on masked positions (detached).
    """

    loss: torch.FloatTensor | None = None
    width_losses: dict | None = None
    distillation_losses: dict | None = None
    masked_accuracy: torch.FloatTensor | None = None


class MGNTNestedTrainingObjective(nn.Module):
    """Masked-token loss of every nested width of `transformer`, with online distillation.

    Args:
        transformer: the `MGNTTransformer` being trained (its `config.class_dropout_prob` is used).
        mask_schedule: training masking ratio schedule (`cosine` in MaskGIT).
        distillation_weight: weight of the KL term of each smaller width (0 disables distillation).
        distillation_temperature: softmax temperature of the KL term.
        distill_from: `full` (every smaller width learns from the full width) or `next` (from the
            next larger width).
        widths_per_step: `all` (every width every step) or `sampled` (the full width plus one
            smaller width drawn uniformly each step; with `distill_from="next"` the teacher is the
            next larger width, run without gradient when it was not drawn).
        label_smoothing: of the ground-truth cross-entropy.
        width_loss_weights: one weight per nested width (smallest first) multiplying that width's loss
            (cross-entropy plus distillation) in the sum; default 1 for every width. Reported `width_losses`
            stay unweighted, so runs with different weights compare on the same scale.
    """

    def __init__(self, transformer: MGNTTransformer, mask_schedule: str = "cosine", distillation_weight: float = 1.0,
                 distillation_temperature: float = 1.0, distill_from: str = "full", widths_per_step: str = "all",
                 label_smoothing: float = 0.0, width_loss_weights: list[float] | tuple[float, ...] | None = None):
        super().__init__()
        check_mask_schedule(mask_schedule)
        check_choice("distill_from", distill_from, DISTILL_FROM)
        check_choice("widths_per_step", widths_per_step, WIDTHS_PER_STEP)
        check_finite_number("distillation_weight", distillation_weight, minimum=0)
        check_finite_number("distillation_temperature", distillation_temperature, minimum=0, exclusive_minimum=True)
        # [0, 1): a smoothing of 1 makes every target uniform, leaving nothing to learn.
        if check_finite_number("label_smoothing", label_smoothing, minimum=0) >= 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        widths = list(transformer.config.nested_widths)
        if width_loss_weights is None:
            width_loss_weights = [1.0] * len(widths)
        elif isinstance(width_loss_weights, (str, bytes)) or len(width_loss_weights) != len(widths):
            raise ValueError(f"width_loss_weights must give one weight per nested width {widths}, "
                             f"got {width_loss_weights!r}")
        self.width_loss_weights = {
            width: check_finite_number(f"width_loss_weights[{i}]", weight, minimum=0, exclusive_minimum=True)
            for i, (width, weight) in enumerate(zip(widths, width_loss_weights))}
        self.transformer = transformer
        self.mask_schedule = mask_schedule
        self.distillation_weight = distillation_weight
        self.distillation_temperature = distillation_temperature
        self.distill_from = distill_from
        self.widths_per_step = widths_per_step
        self.label_smoothing = label_smoothing

    def widths_for_step(self, generator: torch.Generator | None = None) -> list[int]:
        """Widths to run this step, largest first (teachers before students)."""
        widths = list(self.transformer.config.nested_widths)
        if self.widths_per_step == "sampled" and len(widths) > 1:
            drawn = int(torch.randint(len(widths) - 1, (1,), generator=generator))
            widths = [widths[-1], widths[drawn]]
        return sorted(widths, reverse=True)

    def forward(self, token_ids: torch.LongTensor, class_labels: torch.LongTensor,
                generator: torch.Generator | None = None,
                num_context_tokens: torch.LongTensor | None = None) -> NestedTrainingOutput:
        """`token_ids [B, N]` (or `[B, *token_grid]`) ground-truth codes, `class_labels [B]` in `[0, num_classes)`.

        `num_context_tokens [B]` (frame prediction): the first that many grid tokens of each example (the
        context frames') are never masked, so the model learns to continue them; 0 = class-conditional."""
        config = self.transformer.config
        token_ids = token_ids.reshape(token_ids.shape[0], -1)
        batch, num_tokens = token_ids.shape
        if bool(((class_labels < 0) | (class_labels >= config.num_classes)).any()):
            raise ValueError(f"training class_labels must be in [0, {config.num_classes})")
        if num_context_tokens is not None and (num_context_tokens.shape != (batch,) or bool(
                ((num_context_tokens < 0) | (num_context_tokens >= num_tokens)).any())):
            raise ValueError(f"num_context_tokens must be [B={batch}] with values in [0, {num_tokens - 1}], got "
                             f"{list(num_context_tokens.shape)} {num_context_tokens.tolist()[:8]}")
        masked = random_training_mask(batch, num_tokens, self.mask_schedule, token_ids.device, generator,
                                      num_fixed_tokens=num_context_tokens)
        inputs = torch.where(masked, torch.full_like(token_ids, config.mask_token_id), token_ids)
        if self.training:
            class_labels = drop_class_labels(class_labels, config.class_dropout_prob, config.null_class_id, generator)
        targets = token_ids[masked]  # [M]

        widths = self.widths_for_step(generator)
        full_width = config.hidden_size
        if self.distill_from == "next" and len(widths) == 2 and widths[1] != config.nested_widths[-2]:
            # The drawn width's teacher is the next larger width, which was not drawn: run it without gradient.
            teacher_width = config.nested_widths[config.nested_widths.index(widths[1]) + 1]
            widths = [widths[0], teacher_width, widths[1]]
            no_grad_widths = {teacher_width}
        else:
            no_grad_widths = set()

        total = 0.0
        width_losses, distillation_losses = {}, {}
        teacher_logits = None
        masked_accuracy = None
        for width in widths:
            with torch.set_grad_enabled(torch.is_grad_enabled() and width not in no_grad_widths):
                logits = self.transformer(inputs, class_labels, width=width).logits[masked]  # [M, V]
            cross_entropy = F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
            loss = cross_entropy
            if width != full_width and width not in no_grad_widths and self.distillation_weight > 0 \
                    and teacher_logits is not None:
                kl = distillation_kl(logits, teacher_logits, self.distillation_temperature)
                loss = loss + self.distillation_weight * kl
                distillation_losses[width] = kl.detach()
            if width not in no_grad_widths:
                total = total + self.width_loss_weights[width] * loss
                width_losses[width] = cross_entropy.detach()
            if width == full_width:
                masked_accuracy = (logits.argmax(-1) == targets).float().mean().detach()
            if width == full_width or self.distill_from == "next":
                teacher_logits = logits.detach()
        return NestedTrainingOutput(loss=total, width_losses=width_losses, distillation_losses=distillation_losses,
                                    masked_accuracy=masked_accuracy)
