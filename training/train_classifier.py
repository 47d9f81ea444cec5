"""Train the Fashion-MNIST feature classifier behind the classifier FID and class accuracy.

Reads the IDX gz files of the Debian package `dataset-fashion-mnist`, trains
`MGNTFeatureClassifier` on the 60k training images (28x28 padded to 32x32, pixels in [-1, 1]) with
random horizontal flips and random shifts of up to 2 pixels, measures accuracy on the 10k test
images once at the end, and writes `save_pretrained` output plus a model card with the measured
numbers and the command that produced them.

    python training/train_classifier.py --output-dir pipelines/fashion-mnist-classifier \
        --epochs 12 --mixed-precision bf16 --num-threads 2

With `--moving-fashion-mnist DIR` (a `save_to_disk` folder of `mgnt_hf.moving_fashion_mnist`, see
`training/prepare_moving_fashion_mnist.py`) it trains the per-frame classifier of the video metrics
(`mgnt_hf.evaluation`) instead: `--frames-per-video` evenly spaced frames of each training video,
labelled with the video's `label` (the class of its full-intensity item), the same flips and shifts,
and test accuracy over every frame of every test video:

    python training/train_classifier.py --moving-fashion-mnist data/moving-fashion-mnist \
        --output-dir pipelines/moving-fashion-mnist-frame-classifier --frames-per-video 4 --epochs 3

Runs on whatever `accelerate` picks (CPU here; `accelerate launch` for GPUs). bf16 autocast on a
CPU with AMX roughly halves the step time of this CNN; evaluation always runs in float32.

Checkpoints (`--output-dir/checkpoint-<step>`, atomic, the same machinery as the other training scripts) are
written at the end of every epoch (or every `--checkpointing-steps`); `--resume-from-checkpoint latest`
continues with the same data order. SIGINT/SIGTERM finish the current step, save a checkpoint and exit with
status 130/143; a NaN/inf loss stops before the optimizer step, naming the newest safe checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from mgnt_hf import MGNTFeatureClassifier, MGNTFeatureClassifierConfig
from mgnt_hf.data import FASHION_MNIST_DIR
from mgnt_hf.evaluation import classifier_outputs, fashion_mnist_pixels, frames_to_pixels, load_video_arrays
from mgnt_hf.training_utils import (
    CheckpointManager,
    StopSignalGuard,
    epoch_dataloader,
    exit_after_signal,
    remove_incomplete_checkpoints,
    resume_position,
    resume_training,
)

# Per-frame classifier of Moving Fashion-MNIST (64x64 frames): four stages down to 4x4, narrow at full resolution
# where the convolutions cost most.
DEFAULT_CONV_CHANNELS = {"fashion-mnist": [32, 64, 128], "moving-fashion-mnist": [16, 32, 64, 64]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=FASHION_MNIST_DIR, help="folder with the Fashion-MNIST IDX gz files")
    parser.add_argument("--moving-fashion-mnist", default=None, metavar="DIR",
                        help="train the per-frame classifier on this Moving Fashion-MNIST save_to_disk folder "
                             "(train/test splits) instead of Fashion-MNIST images")
    parser.add_argument("--frames-per-video", type=int, default=4,
                        help="with --moving-fashion-mnist: evenly spaced training frames per video (default 4)")
    parser.add_argument("--output-dir", required=True, help="where save_pretrained writes the classifier")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-fraction", type=float, default=0.05, help="linear warm-up share of all steps")
    parser.add_argument("--max-shift", type=int, default=2, help="largest random shift in pixels (0: none)")
    parser.add_argument("--no-flip", action="store_true", help="disable random horizontal flips")
    parser.add_argument("--conv-channels", type=int, nargs="+", default=None,
                        help=f"channels per stage (default {DEFAULT_CONV_CHANNELS})")
    parser.add_argument("--feature-size", type=int, default=128)
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads on the CPU")
    parser.add_argument("--limit-train", type=int, default=None,
                        help="use only the first N training images (videos with --moving-fashion-mnist; smoke tests)")
    parser.add_argument("--limit-test", type=int, default=None,
                        help="with --moving-fashion-mnist: use only the first N test videos (smoke tests)")
    parser.add_argument("--seed", type=int, default=0, help="also fixes the data order (a resume reproduces it)")
    parser.add_argument("--checkpointing-steps", type=int, default=None,
                        help="save a checkpoint every N steps (default: at the end of every epoch)")
    parser.add_argument("--checkpoints-total-limit", type=int, default=1, help="checkpoints kept (default 1)")
    # Also spelt as in the other training scripts, whose messages (shared helpers) name --resume_from_checkpoint.
    parser.add_argument("--resume-from-checkpoint", "--resume_from_checkpoint", default=None,
                        help="'latest' or a checkpoint folder")
    args = parser.parse_args(argv)
    for name in ("checkpointing_steps", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.frames_per_video < 1:
        parser.error(f"--frames-per-video must be a positive integer, got {args.frames_per_video}")
    for name in ("limit_train", "limit_test"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.limit_test is not None and args.moving_fashion_mnist is None:
        parser.error("--limit-test needs --moving-fashion-mnist (the Fashion-MNIST test split is always complete)")
    args.dataset = "fashion-mnist" if args.moving_fashion_mnist is None else "moving-fashion-mnist"
    if args.conv_channels is None:
        args.conv_channels = DEFAULT_CONV_CHANNELS[args.dataset]
    return args


def evenly_spaced_frames(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread over `[0, num_frames - 1]`, first and last included (rounded)."""
    if not 1 <= count <= num_frames:
        raise ValueError(f"cannot take {count} frames per video from videos of {num_frames} frames; "
                         f"--frames-per-video must be in [1, {num_frames}]")
    return np.linspace(0, num_frames - 1, count).round().astype(int).tolist()


def moving_fashion_mnist_frames(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Training frames (`--frames-per-video` per video) and all test frames of Moving Fashion-MNIST.

    Returns uint8 frames `[M, H, W, C]` with int64 labels `[M]` for train and test (each frame labelled with its
    video's `label`), and facts for the model card. Frames stay uint8 until a batch is drawn: the float32
    training set would take 4x the memory.
    """
    train_videos, train_labels = load_video_arrays(args.moving_fashion_mnist, "train", limit=args.limit_train)
    test_videos, test_labels = load_video_arrays(args.moving_fashion_mnist, "test", limit=args.limit_test)
    if train_labels is None or test_labels is None:
        raise ValueError(f"{args.moving_fashion_mnist} has no 'label' column; the frame classifier needs labels")
    indices = evenly_spaced_frames(train_videos.shape[1], args.frames_per_video)
    train_frames = train_videos[:, indices]  # [N, K, H, W, C]
    info = {"num_train_videos": int(train_videos.shape[0]), "num_test_videos": int(test_videos.shape[0]),
            "train_frame_indices": indices, "frames_per_test_video": int(test_videos.shape[1]),
            "image_size": int(train_videos.shape[2])}

    def flatten(frames: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        per_video = frames.shape[1]
        return (torch.from_numpy(frames.reshape(-1, *frames.shape[2:])),
                torch.from_numpy(np.repeat(labels, per_video)))

    return (*flatten(train_frames, train_labels), *flatten(test_videos, test_labels), info)


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
    if results["dataset"] == "moving-fashion-mnist":
        card = moving_fashion_mnist_card(results)
    else:
        card = fashion_mnist_card(results)
    (output_dir / "README.md").write_text(card)


def training_paragraph(results: dict, data: str) -> str:
    """The card's training details, shared by both datasets."""
    return f"""{data}, {results['epochs']} epochs, batch
{results['batch_size']}, AdamW (peak learning rate {results['learning_rate']}, weight decay
{results['weight_decay']}, warm-up then cosine decay), random horizontal flips and shifts of up to
{results['max_shift']} pixels, mixed precision `{results['mixed_precision']}` on
`{results['device']}` with {results['num_threads']} torch intra-op thread(s), seed {results['seed']}.
Wall time: {results['train_seconds'] / 60:.1f} min training, {results['test_seconds']:.1f} s test evaluation.

```bash
{results['command']}
```
"""


def fashion_mnist_card(results: dict) -> str:
    return f"""---
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

{training_paragraph(results, "Fashion-MNIST train split (60,000 images, MIT licence)")}"""


def moving_fashion_mnist_card(results: dict) -> str:
    size = results["image_size"]
    return f"""---
library_name: mgnt_hf
license: mit
metrics:
- accuracy
tags:
- image-classification
- video-evaluation
- evaluation
---

# Moving Fashion-MNIST frame classifier for mgnt_hf

A small CNN (`MGNTFeatureClassifier`, {results['num_parameters']:,} parameters, stages
{results['conv_channels']}) that classifies single `{size}x{size}` frames of Moving Fashion-MNIST videos
(`mgnt_hf.moving_fashion_mnist`) by the class of their full-intensity item; the half-intensity
distractor item is to be ignored. Its {results['feature_size']}-d penultimate features define the
per-frame **classifier FID** of `mgnt_hf.evaluation`, and its predictions the per-frame accuracy
and the label consistency of generated videos. Input: pixels `[B, 1, {size}, {size}]` in `[-1, 1]`.

**Test accuracy: {100 * results['test_accuracy']:.2f}%** over all {results['num_test_images']:,} frames of the
{results['num_test_videos']:,} test videos ({results['frames_per_test_video']} frames each; measured once, after
the last epoch; no model selection on the test set).

## Usage

```python
from mgnt_hf.evaluation import MGNTFeatureClassifier, evaluate_video_pipeline, load_video_arrays

classifier = MGNTFeatureClassifier.from_pretrained("pipelines/moving-fashion-mnist-frame-classifier")
videos, labels = load_video_arrays("data/moving-fashion-mnist", split="test")
results = evaluate_video_pipeline(pipe, classifier, videos, labels)
```

Classifier-FID values are comparable with each other, not with Inception FIDs or FVDs.

## Training

{training_paragraph(results, f"Moving Fashion-MNIST train split ({results['num_train_videos']:,} videos; frames "
                             f"{results['train_frame_indices']} of each, {results['num_train_images']:,} frames, labelled "
                             f"with the video's label)")}"""


def test_logits(model: MGNTFeatureClassifier, test_images: torch.Tensor, chunk_size: int = 2000) -> torch.Tensor:
    """Logits `[M, num_labels]` of the test set: pixels `[M, C, H, W]` in [-1, 1], or uint8 frames `[M, H, W, C]`
    converted a chunk at a time."""
    if test_images.dtype != torch.uint8:
        return classifier_outputs(model, test_images, batch_size=1000)[1]
    chunks = [classifier_outputs(model, frames_to_pixels(test_images[start : start + chunk_size]), batch_size=1000)[1]
              for start in range(0, test_images.shape[0], chunk_size)]
    return torch.cat(chunks)


def main(argv=None):
    args = parse_args(argv)
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    # The shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    if args.dataset == "moving-fashion-mnist":
        # uint8 frames [M, H, W, C]; each batch becomes pixels in [-1, 1] below.
        train_pixels, train_labels, test_pixels, test_labels, data_info = moving_fashion_mnist_frames(args)
        image_size = data_info["image_size"]
    else:
        train_pixels, train_labels = fashion_mnist_pixels("train", args.data_dir)
        test_pixels, test_labels = fashion_mnist_pixels("test", args.data_dir)
        if args.limit_train is not None:
            train_pixels, train_labels = train_pixels[: args.limit_train], train_labels[: args.limit_train]
        data_info, image_size = {}, train_pixels.shape[-1]

    config = MGNTFeatureClassifierConfig(num_channels=1, image_size=image_size, conv_channels=tuple(args.conv_channels),
                                         feature_size=args.feature_size)
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

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_incomplete_checkpoints(output_dir)
    global_step = resume_training(accelerator, output_dir, args.resume_from_checkpoint, args.epochs * len(loader))
    checkpoints = CheckpointManager(accelerator, output_dir, args.checkpoints_total_limit)
    checkpointing_steps = args.checkpointing_steps or len(loader)
    first_epoch, skip_batches = resume_position(global_step, 1, len(loader))
    stopped_by_signal = False

    start = time.perf_counter()
    with StopSignalGuard() as guard:
        for epoch in range(first_epoch, args.epochs):
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            batches = epoch_dataloader(accelerator, loader, epoch, skip_batches if epoch == first_epoch else 0)
            progress = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not accelerator.is_main_process,
                            mininterval=30)
            for pixels, labels in progress:
                if pixels.dtype == torch.uint8:
                    pixels = frames_to_pixels(pixels)
                # The augmentation and dropout draw from torch's global generator, which each new data loader
                # iterator also draws from: seeded by (seed, process, step), a resumed run draws what the
                # uninterrupted one drew.
                torch.manual_seed(int(np.random.SeedSequence(
                    [args.seed, accelerator.process_index, global_step]).generate_state(1)[0]))
                pixels = augment(pixels, args.max_shift, flip=not args.no_flip)
                output = model(pixels, labels=labels)
                checkpoints.check_losses({"loss": output.loss}, global_step + 1)
                accelerator.backward(output.loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                global_step += 1
                loss_sum += output.loss.item() * labels.shape[0]
                correct += (output.logits.argmax(-1) == labels).sum().item()
                seen += labels.shape[0]
                if global_step % checkpointing_steps == 0:
                    checkpoints.save(global_step)
                if guard.should_stop(accelerator):
                    stopped_by_signal = True
                    break
            if stopped_by_signal:
                break
            accelerator.print(
                f"epoch {epoch + 1}: train loss {loss_sum / seen:.4f}, train accuracy (augmented) "
                f"{correct / seen:.4f}, {time.perf_counter() - start:.0f} s"
            )
    if stopped_by_signal:
        exit_after_signal(accelerator, guard, checkpoints.finish(global_step), global_step)
    checkpoints.commit()  # the last epoch's checkpoint: no later loss will test it
    train_seconds = time.perf_counter() - start

    model = accelerator.unwrap_model(model).float()
    start = time.perf_counter()
    logits = test_logits(model, test_pixels)
    test_seconds = time.perf_counter() - start
    test_accuracy = float((logits.argmax(-1) == test_labels).double().mean())
    accelerator.print(f"test accuracy {test_accuracy:.4f} ({test_labels.shape[0]} images)")

    if accelerator.is_main_process:
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
            **data_info,
            **{key: value for key, value in vars(args).items() if key not in ("data_dir", "output_dir")},
        }
        (output_dir / "training_results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_model_card(output_dir, results)
    return test_accuracy


if __name__ == "__main__":
    main()
