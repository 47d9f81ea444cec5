"""Train the Fashion-MNIST feature classifier behind the classifier FID and class accuracy.

Reads the IDX gz files of the Debian package `dataset-fashion-mnist`, trains
`MGNTFeatureClassifier` on the 60k training images (28x28 padded to 32x32, pixels in [-1, 1]) with
random horizontal flips and random shifts of up to 2 pixels, measures accuracy on the 10k test
images once at the end, and writes `save_pretrained` output plus a model card with the measured
numbers and the command that produced them.

    python training/train_classifier.py --output-dir pipelines/fashion-mnist-classifier \
        --epochs 12 --mixed-precision bf16 --num-threads 2

Runs on whatever `accelerate` picks (CPU here; `accelerate launch` for GPUs). bf16 autocast on a
CPU with AMX roughly halves the step time of this CNN; evaluation always runs in float32.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from mgnt_hf.data import FASHION_MNIST_DIR
from mgnt_hf.evaluation import (
    MGNTFeatureClassifier,
    MGNTFeatureClassifierConfig,
    classifier_outputs,
    fashion_mnist_pixels,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=FASHION_MNIST_DIR, help="folder with the Fashion-MNIST IDX gz files")
    parser.add_argument("--output-dir", required=True, help="where save_pretrained writes the classifier")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-fraction", type=float, default=0.05, help="linear warm-up share of all steps")
    parser.add_argument("--max-shift", type=int, default=2, help="largest random shift in pixels (0: none)")
    parser.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    parser.add_argument("--conv-channels", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--feature-size", type=int, default=128)
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads on the CPU")
    parser.add_argument("--limit-train", type=int, default=None, help="use only the first N training images (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def augment(pixels: torch.Tensor, max_shift: int, flip: bool) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to `max_shift` pixels per image, `[B, C, H, W]` -> same.

    Shifted-in borders are background (-1), like the dataset's own padding.
    """
    batch_size, _, height, width = pixels.shape
    if flip:
        flipped = torch.rand(batch_size, device=pixels.device) < 0.5
        pixels = torch.where(flipped[:, None, None, None], pixels.flip(-1), pixels)
    if max_shift > 0:
        padded = torch.nn.functional.pad(pixels, (max_shift,) * 4, value=-1.0)
        offset_rows = torch.randint(0, 2 * max_shift + 1, (batch_size, 1), device=pixels.device)
        offset_cols = torch.randint(0, 2 * max_shift + 1, (batch_size, 1), device=pixels.device)
        rows = offset_rows + torch.arange(height, device=pixels.device)  # [B, H]
        cols = offset_cols + torch.arange(width, device=pixels.device)  # [B, W]
        batch_index = torch.arange(batch_size, device=pixels.device)[:, None, None]
        # [B, H, W, C] from advanced indexing on (batch, row, col), channels kept by the slice.
        pixels = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return pixels.contiguous()


def write_model_card(output_dir: Path, results: dict) -> None:
    card = f"""---
library_name: mgnt_hf
license: mit
datasets:
- fashion_mnist
metrics:
- accuracy
tags:
- image-classification
- evaluation
---

# Fashion-MNIST feature classifier for mgnt_hf

A small CNN (`MGNTFeatureClassifier`, {results['num_parameters']:,} parameters) whose
{results['feature_size']}-d penultimate features define the **classifier FID** of mgnt_hf and whose
predictions define the **class accuracy** of class-conditional samples. Input: pixels
`[B, 1, 32, 32]` in `[-1, 1]` (Fashion-MNIST's 28x28 images centre-padded by 2 with background).

**Test accuracy: {100 * results['test_accuracy']:.2f}%** on the 10,000 Fashion-MNIST test images
(measured once, after the last epoch; no model selection on the test set).

## Usage

```python
from mgnt_hf.evaluation import MGNTFeatureClassifier, fashion_mnist_pixels, reference_statistics, evaluate_samples

classifier = MGNTFeatureClassifier.from_pretrained("pipelines/fashion-mnist-classifier")
real_pixels, _ = fashion_mnist_pixels("test")
reference = reference_statistics(classifier, real_pixels)
scores = evaluate_samples(classifier, generated_pixels, intended_labels, reference)
```

Classifier-FID values are comparable with each other, not with Inception FIDs.

## Training

Fashion-MNIST train split (60,000 images, MIT licence), {results['epochs']} epochs, batch
{results['batch_size']}, AdamW (peak learning rate {results['learning_rate']}, weight decay
{results['weight_decay']}, warm-up then cosine decay), random horizontal flips and shifts of up to
{results['max_shift']} pixels, mixed precision `{results['mixed_precision']}` on
`{results['device']}` with {results['num_threads']} torch intra-op thread(s), seed {results['seed']}.
Wall time: {results['train_seconds'] / 60:.1f} min training, {results['test_seconds']:.1f} s test evaluation.

```bash
{results['command']}
```
"""
    (output_dir / "README.md").write_text(card)


def main(argv=None):
    args = parse_args(argv)
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)

    train_pixels, train_labels = fashion_mnist_pixels("train", args.data_dir)
    test_pixels, test_labels = fashion_mnist_pixels("test", args.data_dir)
    if args.limit_train is not None:
        train_pixels, train_labels = train_pixels[: args.limit_train], train_labels[: args.limit_train]

    config = MGNTFeatureClassifierConfig(conv_channels=tuple(args.conv_channels), feature_size=args.feature_size)
    model = MGNTFeatureClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    loader = DataLoader(TensorDataset(train_pixels, train_labels), batch_size=args.batch_size, shuffle=True, drop_last=True)
    total_steps = args.epochs * len(loader)
    warmup_steps = max(1, int(args.warmup_fraction * total_steps))

    def learning_rate_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not accelerator.is_main_process, mininterval=30)
        for pixels, labels in progress:
            pixels = augment(pixels, args.max_shift, flip=not args.no_flip)
            output = model(pixels, labels=labels)
            accelerator.backward(output.loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss_sum += output.loss.item() * labels.shape[0]
            correct += (output.logits.argmax(-1) == labels).sum().item()
            seen += labels.shape[0]
        accelerator.print(
            f"epoch {epoch + 1}: train loss {loss_sum / seen:.4f}, train accuracy (augmented) {correct / seen:.4f}, "
            f"{time.perf_counter() - start:.0f} s"
        )
    train_seconds = time.perf_counter() - start

    model = accelerator.unwrap_model(model).float()
    start = time.perf_counter()
    _, logits = classifier_outputs(model, test_pixels, batch_size=1000)
    test_seconds = time.perf_counter() - start
    test_accuracy = float((logits.argmax(-1) == test_labels).double().mean())
    accelerator.print(f"test accuracy {test_accuracy:.4f} ({test_labels.shape[0]} images)")

    if accelerator.is_main_process:
        output_dir = Path(args.output_dir)
        model.save_pretrained(output_dir)
        results = {
            "test_accuracy": test_accuracy,
            "num_test_images": int(test_labels.shape[0]),
            "num_train_images": int(train_labels.shape[0]),
            "train_seconds": train_seconds,
            "test_seconds": test_seconds,
            "device": str(accelerator.device),
            "num_threads": torch.get_num_threads(),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "torch_version": torch.__version__,
            "command": shlex.join(["python", "training/train_classifier.py", *(sys.argv[1:] if argv is None else argv)]),
            **{key: value for key, value in vars(args).items() if key not in ("data_dir", "output_dir")},
        }
        (output_dir / "training_results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_model_card(output_dir, results)
    return test_accuracy


if __name__ == "__main__":
    main()
