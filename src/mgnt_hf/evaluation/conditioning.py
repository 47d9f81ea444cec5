"""How much a transformer uses its class label: masked-token cross-entropy under every label, on real tokens.

A class-conditional MaskGIT model that ignores its label generates the right class only by chance, however good
its samples look. [`class_label_probe`] measures this directly, without sampling: real token grids are masked
(a fixed fraction of positions, the same positions under every label) and the masked tokens are scored under the
true label, under each wrong label and under the null class (the unconditional branch of guidance). From one
forward per label it reports

- `cross_entropy_true` / `_wrong` / `_null`: nats per masked token (wrong: the mean over the wrong labels);
- `label_information_nats`: `(null - true)` summed over an example's masked tokens, i.e. how many nats the label
  saves in coding that example's masked tokens (0 for a model that ignores it; at mask ratio 1 it is what the
  first decoding step can learn from the label);
- `label_identification`: the fraction of examples whose true label scores strictly lower than every other label
  (the transformer used as a classifier; chance is `1 / num_classes`, a model that ignores the label scores 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..modeling_mgnt import MGNTTransformer


def _masked_positions(batch_size: int, num_tokens: int, num_masked: int, generator: torch.Generator) -> torch.Tensor:
    """`[B, N]` bool: exactly `num_masked` random positions per row."""
    order = torch.rand(batch_size, num_tokens, generator=generator).argsort(dim=1)
    return order < num_masked


@torch.no_grad()
def class_label_probe(
    transformer: MGNTTransformer,
    token_ids: torch.LongTensor,
    class_labels: torch.LongTensor,
    mask_ratios: Sequence[float] = (1.0, 0.9, 0.5),
    widths: Sequence[int] | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> list[dict]:
    """Score real tokens under every class label; one result per (mask ratio, width).

    Args:
        transformer: the model to probe (run in eval mode; its device and dtype are used).
        token_ids (`[M, N]` or `[M, *token_grid]`): real codebook ids in `[0, codebook_size)`.
        class_labels (`[M]`): their true labels in `[0, num_classes)`.
        mask_ratios: fractions of positions masked, each in `(0, 1]`; `round(ratio * N)` positions (at least one)
            per example, drawn from `seed` and the same for every width and label.
        widths: nested widths to run (default: all of `config.nested_widths`).
        batch_size: examples per forward.
        seed: the masks' seed.

    Returns:
        A list of dicts with `mask_ratio`, `width`, `num_masked` and the figures of the module docstring.
    """
    config = transformer.config
    if token_ids.dim() < 2 or token_ids.shape[0] == 0:
        raise ValueError(f"token_ids must be [M, N] or [M, *token_grid] with M >= 1, got {list(token_ids.shape)}")
    token_ids = token_ids.reshape(token_ids.shape[0], -1).long()
    if token_ids.shape[1] != config.num_grid_tokens:
        raise ValueError(f"token_ids hold {token_ids.shape[1]} positions per example; the transformer's grid has "
                         f"{config.num_grid_tokens}")
    if bool(((token_ids < 0) | (token_ids >= config.codebook_size)).any()):
        raise ValueError(f"token_ids must be codebook ids in [0, {config.codebook_size}) (no mask tokens)")
    class_labels = torch.as_tensor(class_labels).long()
    if class_labels.shape != (token_ids.shape[0],):
        raise ValueError(f"class_labels must be [{token_ids.shape[0]}], got {list(class_labels.shape)}")
    if bool(((class_labels < 0) | (class_labels >= config.num_classes)).any()):
        raise ValueError(f"class_labels must be real labels in [0, {config.num_classes}) (not the null class)")
    if config.num_classes < 2:
        raise ValueError(f"the probe compares labels; this transformer has {config.num_classes} class")
    if not mask_ratios:
        raise ValueError("mask_ratios must name at least one ratio")
    for ratio in mask_ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"mask ratios must be numbers in (0, 1], got {ratio!r}")
    widths = list(config.nested_widths) if widths is None else [config.check_width(width) for width in widths]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    was_training = transformer.training
    transformer.eval()
    device = transformer.device
    num_examples, num_tokens = token_ids.shape
    num_classes = config.num_classes
    candidate_labels = [*range(num_classes), config.null_class_id]
    results = []
    try:
        for ratio in mask_ratios:
            num_masked = max(1, round(ratio * num_tokens))
            masks = _masked_positions(num_examples, num_tokens, num_masked, torch.Generator().manual_seed(seed))
            for width in widths:
                # nats of each example's masked tokens under each candidate label: [M, num_classes + 1]
                coded_nats = torch.empty(num_examples, len(candidate_labels), dtype=torch.float64)
                for start in range(0, num_examples, batch_size):
                    tokens = token_ids[start:start + batch_size].to(device)
                    mask = masks[start:start + batch_size].to(device)
                    inputs = tokens.masked_fill(mask, config.codebook_size)
                    for column, label in enumerate(candidate_labels):
                        labels = torch.full((len(tokens),), label, dtype=torch.long, device=device)
                        logits = transformer(inputs, labels, width=width, check_values=False).logits
                        per_token = F.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")
                        coded_nats[start:start + len(tokens), column] = (per_token * mask).sum(1).double().cpu()
                results.append(_summarise(coded_nats, class_labels, num_classes, num_masked, ratio, width))
    finally:
        transformer.train(was_training)
    return results


def _summarise(coded_nats: torch.Tensor, class_labels: torch.Tensor, num_classes: int, num_masked: int,
               ratio: float, width: int) -> dict:
    rows = torch.arange(len(class_labels))
    true = coded_nats[rows, class_labels]
    conditional = coded_nats[:, :num_classes]
    is_wrong = torch.ones_like(conditional, dtype=torch.bool)
    is_wrong[rows, class_labels] = False
    wrong = (conditional * is_wrong).sum(1) / (num_classes - 1)
    null = coded_nats[:, num_classes]
    # Strictly lower than every other label: a model whose labels all score alike identifies nothing.
    best_other = conditional.masked_fill(~is_wrong, float("inf")).min(1).values
    return {
        "mask_ratio": float(ratio),
        "width": int(width),
        "num_masked": int(num_masked),
        "num_examples": len(class_labels),
        "cross_entropy_true": float(true.mean() / num_masked),
        "cross_entropy_wrong": float(wrong.mean() / num_masked),
        "cross_entropy_null": float(null.mean() / num_masked),
        "label_information_nats": float((null - true).mean()),
        "label_identification": float((true < best_other).double().mean()),
    }


def format_probe_table(results: list[dict]) -> str:
    """Markdown table of [`class_label_probe`] results, one line per (mask ratio, width)."""
    lines = ["| mask ratio | width | masked tokens | CE true | CE wrong | CE null | label information (nats/example) "
             "| label identification % |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results:
        lines.append(f"| {row['mask_ratio']:g} | {row['width']} | {row['num_masked']} | "
                     f"{row['cross_entropy_true']:.4f} | {row['cross_entropy_wrong']:.4f} | "
                     f"{row['cross_entropy_null']:.4f} | {row['label_information_nats']:.2f} | "
                     f"{100 * row['label_identification']:.1f} |")
    return "\n".join(lines)
