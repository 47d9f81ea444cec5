"""Train the MaGNeTS VQ image or video tokenizer (`MGNTVQModel`) with accelerate.

Any number of processes/GPUs, mixed precision through accelerate:

    python training/prepare_fashion_mnist.py --output_dir data/fashion-mnist
    accelerate launch --num_processes 1 --cpu --mixed_precision bf16 training/train_tokenizer.py \
        --dataset_name data/fashion-mnist --vq_config fashion-mnist --resize_mode pad \
        --output_dir runs/tokenizer-fmnist --train_batch_size 64 --learning_rate 2e-4 \
        --max_train_steps 2000 --checkpointing_steps 500 --validation_steps 500

Video tokenizers (a config with `num_frames`, e.g. `--vq_config moving-fashion-mnist`) train the same way
on video datasets (`mgnt_hf.video_io.load_video_dataset`: a save_to_disk folder, a Hub dataset, or
class folders of video files / frame folders); clips of `--num_frames` frames (default: the config's)
are cut deterministically (`--clip_start`, `--frame_stride`):

    python training/prepare_moving_fashion_mnist.py --output_dir data/moving-fashion-mnist
    accelerate launch --num_processes 1 --cpu --mixed_precision bf16 training/train_tokenizer.py \
        --dataset_name data/moving-fashion-mnist --vq_config moving-fashion-mnist \
        --output_dir runs/tokenizer-mfm --train_batch_size 8 --learning_rate 1e-3 --max_train_steps 1500

Loss per step: reconstruction (`--reconstruction_loss l1|l2`) + codebook loss + commitment_weight x
commitment loss (+ `--adversarial_weight` x hinge PatchGAN generator loss from
`--adversarial_start_step` on; the discriminator is trained alongside and lives only in checkpoints).
No perceptual loss: the usual one (LPIPS) needs downloaded VGG weights.

Outputs in `--output_dir`: the tokenizer (`save_pretrained`: config.json + model.safetensors),
`checkpoint-<step>` folders (atomic; `--resume_from_checkpoint latest` continues with the same data
order), `validation/step-<n>.png` (originals above reconstructions), `logs/metrics.jsonl`, and
`eval_results.json` (reconstruction MSE/PSNR and codebook usage over the validation split).
Bad images stop the run before training with a message naming them (or `--skip_bad_images`);
SIGINT/SIGTERM finish the current step, save a checkpoint and exit with status 130/143; a NaN/inf loss
stops with a clear error before the optimizer step, naming the newest checkpoint whose weights gave finite
losses (training/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mgnt_hf import MGNTVQConfig, MGNTVQModel
from mgnt_hf.configuration_vq import VQ_PRESETS
from mgnt_hf.data import (
    RESIZE_MODES,
    ImageTransform,
    check_images,
    collate_examples,
    load_image_dataset,
    resolve_columns,
    with_pixel_transform,
)
from mgnt_hf.modeling_vq import frames_to_batch
from mgnt_hf.video_io import VideoTransform, check_videos, load_video_dataset, resolve_video_columns
from mgnt_hf.training_utils import (
    CheckpointManager,
    StopSignalGuard,
    check_resume_setting,
    end_training,
    epoch_dataloader,
    exit_after_signal,
    ignore_stop_signals,
    remove_incomplete_checkpoints,
    resume_position,
    resume_training,
    steps_per_epoch,
    time_budget_spent,
)

logger = get_logger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default=None,
                      help="HF datasets name, a save_to_disk folder, or a local folder load_dataset understands")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_data_dir", default=None, help="image folder with one subfolder per class")
    data.add_argument("--train_split", default="train")
    data.add_argument("--validation_split", default="auto",
                      help="split for reconstructions and the final evaluation; 'auto': 'test' or 'validation' "
                           "if the dataset has one, else the training data; 'none': skip")
    data.add_argument("--image_column", default=None, help="default: 'image', or the only Image column")
    data.add_argument("--video_column", default=None, help="video tokenizers: default 'video'")
    data.add_argument("--num_frames", type=int, default=None,
                      help="video tokenizers: frames per training clip (default: the config's num_frames, which "
                           "this also sets)")
    data.add_argument("--frame_stride", type=int, default=1, help="video tokenizers: keep every k-th frame")
    data.add_argument("--clip_start", choices=["start", "center"], default="start",
                      help="video tokenizers: where the clip is cut from longer videos")
    data.add_argument("--cache_dir", default=None)
    data.add_argument("--resolution", type=int, nargs="+", default=None,
                      help="H [W]; overrides the tokenizer config's resolution")
    data.add_argument("--resize_mode", choices=RESIZE_MODES, default="center_crop",
                      help="'pad' for small images (Fashion-MNIST 28 -> 32), 'center_crop' for photos")
    data.add_argument("--random_flip", action="store_true", help="random horizontal flips")
    data.add_argument("--skip_bad_images", action="store_true",
                      help="skip unreadable images with a logged warning instead of stopping")
    data.add_argument("--skip_image_check", action="store_true",
                      help="do not decode every image before training (huge, trusted datasets)")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--vq_config", default="fashion-mnist",
                       help=f"JSON file (MGNTVQConfig fields or a saved config.json) or a preset: {sorted(VQ_PRESETS)}")
    model.add_argument("--pretrained_vqvae_name_or_path", default=None,
                       help="MGNTVQModel folder or Hub id to continue from (its config replaces --vq_config)")
    model.add_argument("--gradient_checkpointing", action="store_true")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--output_dir", required=True)
    optim.add_argument("--seed", type=int, default=0, help="also fixes the data order (resume reproduces it)")
    optim.add_argument("--train_batch_size", type=int, default=32, help="per process")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--max_train_steps", type=int, default=None)
    optim.add_argument("--num_train_epochs", type=int, default=1, help="used when --max_train_steps is not given")
    optim.add_argument("--max_train_seconds", type=float, default=None,
                       help="wall-clock budget of this invocation: stop after the step that crosses it, save a "
                            "checkpoint and the tokenizer (the lr schedule still spans --max_train_steps)")
    optim.add_argument("--learning_rate", type=float, default=2e-4)
    optim.add_argument("--scale_lr", action="store_true",
                       help="multiply the learning rate by processes x batch size x accumulation steps")
    optim.add_argument("--lr_scheduler", default="constant",
                       help="diffusers get_scheduler name: constant, constant_with_warmup, cosine, linear, ...")
    optim.add_argument("--lr_warmup_steps", type=int, default=0)
    optim.add_argument("--adam_beta1", type=float, default=0.5)
    optim.add_argument("--adam_beta2", type=float, default=0.9)
    optim.add_argument("--adam_weight_decay", type=float, default=0.0)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    optim.add_argument("--reconstruction_loss", choices=["l1", "l2"], default="l2")
    optim.add_argument("--adversarial_weight", type=float, default=0.0, help="0 disables the PatchGAN loss")
    optim.add_argument("--adversarial_start_step", type=int, default=0)
    optim.add_argument("--discriminator_learning_rate", type=float, default=None, help="default: --learning_rate")
    optim.add_argument("--discriminator_channels", type=int, default=64)
    optim.add_argument("--discriminator_layers", type=int, default=2, help="stride-2 layers of the PatchGAN")
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                       help="default: accelerate's config / `accelerate launch --mixed_precision`")

    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--checkpointing_steps", type=int, default=500)
    run.add_argument("--checkpoints_total_limit", type=int, default=None)
    run.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    run.add_argument("--validation_steps", type=int, default=500)
    run.add_argument("--num_validation_images", type=int, default=8)
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--logging_dir", default="logs", help="relative to --output_dir")
    run.add_argument("--report_to", default="none", help="accelerate trackers: tensorboard, wandb, all, none")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None)
    run.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)

    if (args.dataset_name is None) == (args.train_data_dir is None):
        parser.error("give exactly one of --dataset_name and --train_data_dir")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps",
                 "logging_steps", "num_train_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        parser.error(f"--max_train_steps must be >= 1, got {args.max_train_steps}")
    if args.num_frames is not None and args.num_frames < 1:
        parser.error(f"--num_frames must be >= 1, got {args.num_frames}")
    if args.max_train_seconds is not None and not args.max_train_seconds >= 0:  # NaN fails this too
        parser.error(f"--max_train_seconds must be >= 0, got {args.max_train_seconds}")
    if args.resolution is not None and len(args.resolution) not in (1, 2):
        parser.error(f"--resolution takes H or H W, got {args.resolution}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    return args


def load_vq_config(spec: str, resolution: list[int] | None, num_frames: int | None = None) -> MGNTVQConfig:
    """A preset name or a JSON file of `MGNTVQConfig` fields; `resolution` (H [W]) and `num_frames` override the
    config's (`num_frames` only for video configs: it does not turn an image tokenizer into a video one)."""
    overrides = {}
    if resolution is not None:
        overrides["resolution"] = tuple(resolution) if len(resolution) == 2 else resolution[0]
    if num_frames is not None:
        overrides["num_frames"] = num_frames
    if spec in VQ_PRESETS:
        fields = dict(VQ_PRESETS[spec])
    elif os.path.isfile(spec):
        fields = json.loads(Path(spec).read_text())
        fields.pop("model_type", None)
    else:
        raise ValueError(f"--vq_config {spec!r} is neither a preset {sorted(VQ_PRESETS)} nor a JSON file")
    if num_frames is not None and fields.get("num_frames") is None:
        raise ValueError(f"--num_frames {num_frames} given but --vq_config {spec} is an image tokenizer (set "
                         f"num_frames in a JSON config, or use a video preset: "
                         f"{sorted(k for k, v in VQ_PRESETS.items() if v.get('num_frames'))})")
    return MGNTVQConfig(**{**fields, **overrides})


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / VQGAN): one real/fake score per overlapping image patch.

    GroupNorm instead of BatchNorm so replicas need no synchronised statistics.
    """

    def __init__(self, num_channels: int, channels: int = 64, num_layers: int = 2):
        super().__init__()
        layers = [nn.Conv2d(num_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(width, width * 2, 4, stride=2, padding=1), nn.GroupNorm(8, width * 2),
                       nn.LeakyReLU(0.2)]
            width *= 2
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.LeakyReLU(0.2),
                   nn.Conv2d(width, 1, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() == 5:  # video: judge every frame
            pixel_values = frames_to_batch(pixel_values)
        return self.layers(pixel_values)  # [B(*T), 1, h', w'] logits


def load_splits(args, load):
    """The training split and the validation split (`--validation_split`: a name, 'auto' = 'test' or 'validation'
    when the dataset has one else the training data, 'none'), both cut to `--max_*_samples`. `load(dataset_name,
    train_data_dir, split)` is the image or the video dataset loader."""
    train = load(args.dataset_name, args.train_data_dir, args.train_split)
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.validation_split == "none":
        return train, None
    validation = None
    if args.validation_split == "auto":
        for candidate in ("test", "validation") if args.dataset_name is not None else ():
            try:
                validation = load(args.dataset_name, None, candidate)
                break
            except ValueError:
                continue
    else:
        validation = load(args.dataset_name, args.train_data_dir, args.validation_split)
    if validation is None:
        validation = train
    if args.max_eval_samples is not None:
        validation = validation.select(range(min(args.max_eval_samples, len(validation))))
    return train, validation


def build_video_datasets(args, config: MGNTVQConfig):
    """Training and validation video datasets with the clip transform; bad videos found before training."""
    train, validation = load_splits(args, lambda name, folder, split: load_video_dataset(
        name, folder, split=split, dataset_config_name=args.dataset_config_name, cache_dir=args.cache_dir,
        video_column=args.video_column))
    video_column, _ = resolve_video_columns(train, args.video_column)
    transform = VideoTransform(num_frames=config.num_frames, num_channels=config.num_channels,
                               resolution=config.resolution, resize_mode=args.resize_mode,
                               frame_stride=args.frame_stride, clip_start=args.clip_start, random_flip=args.random_flip)
    eval_transform = dataclasses.replace(transform, random_flip=False, resize_mode="center_crop"
                                         if args.resize_mode == "random_crop" else args.resize_mode)
    if not args.skip_image_check:
        num_proc = args.dataloader_num_workers if args.dataloader_num_workers > 1 else None
        train = check_videos(train, video_column, transform, skip_bad_videos=args.skip_bad_images, num_proc=num_proc)
        if validation is not None:
            validation = check_videos(validation, video_column, eval_transform,
                                      skip_bad_videos=args.skip_bad_images, num_proc=num_proc)
    train = with_pixel_transform(train, transform, video_column)
    if validation is not None:
        validation = with_pixel_transform(validation, eval_transform, video_column)
    return train, validation


def build_datasets(args, config: MGNTVQConfig):
    """Training and validation datasets with the image transform; bad images found before training."""
    if config.is_video:
        return build_video_datasets(args, config)
    train, validation = load_splits(args, lambda name, folder, split: load_image_dataset(
        name, folder, split=split, dataset_config_name=args.dataset_config_name, cache_dir=args.cache_dir))
    image_column, _ = resolve_columns(train, args.image_column)
    if validation is not None:
        resolve_columns(validation, image_column)
    if not args.skip_image_check:
        num_proc = args.dataloader_num_workers if args.dataloader_num_workers > 1 else None
        train = check_images(train, image_column, skip_bad_images=args.skip_bad_images, num_proc=num_proc)
        if validation is not None:
            validation = check_images(validation, image_column, skip_bad_images=args.skip_bad_images,
                                      num_proc=num_proc)
    train_transform = ImageTransform(config.num_channels, config.resolution, args.resize_mode, args.random_flip)
    eval_mode = "center_crop" if args.resize_mode == "random_crop" else args.resize_mode
    eval_transform = ImageTransform(config.num_channels, config.resolution, eval_mode, random_flip=False)
    train = with_pixel_transform(train, train_transform, image_column, skip_bad=args.skip_bad_images)
    if validation is not None:
        validation = with_pixel_transform(validation, eval_transform, image_column, skip_bad=args.skip_bad_images)
    return train, validation


def to_uint8_grid(originals: torch.Tensor, reconstructions: torch.Tensor) -> np.ndarray:
    """`[N, C, H, W]` x 2 in [-1, 1] -> `[2H, N*W, 3]` uint8: originals above reconstructions. Videos
    `[N, C, T, H, W]`: one pair of rows (original, reconstruction) per video, frames left to right."""
    if originals.dim() == 5:
        return np.concatenate([to_uint8_grid(frames_to_batch(original[None]), frames_to_batch(reconstruction[None]))
                               for original, reconstruction in zip(originals, reconstructions)], axis=0)
    rows = []
    for images in (originals, reconstructions):
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        rows.append(torch.cat(list(images), dim=2))  # [3, H, N*W]
    return torch.cat(rows, dim=1).permute(1, 2, 0).numpy()


@torch.no_grad()
def log_validation(model: MGNTVQModel, images: torch.Tensor, accelerator, args, step: int) -> float:
    """Reconstruct the fixed validation images; save/log the grid; return their MSE. Main process only."""
    was_training = model.training
    model.eval()
    images = images.to(accelerator.device)
    reconstructions = model.decode(model.encode(images))
    model.train(was_training)
    mse = float(F.mse_loss(reconstructions.float(), images.float()))
    grid = to_uint8_grid(images, reconstructions)
    folder = Path(args.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(folder / f"step-{step:07d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation/reconstructions", grid[None], step, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation/reconstructions": [wandb.Image(grid, caption="top: input, bottom: output")]},
                        step=step)
    return mse


@torch.no_grad()
def evaluate(model, dataloader, accelerator, codebook_size: int) -> dict:
    """Reconstruction MSE / PSNR (pixels in [-1, 1], peak-to-peak 2) and codebook usage over a whole split."""
    model.eval()
    squared_error_sum, pixel_count, num_images = 0.0, 0, 0
    counts = torch.zeros(codebook_size, dtype=torch.float64)
    unwrapped = accelerator.unwrap_model(model)
    for batch in dataloader:
        pixels = batch["pixel_values"]
        ids = unwrapped.encode(pixels)
        reconstructions = unwrapped.decode(ids)
        per_image = ((reconstructions.float() - pixels.float()) ** 2).flatten(1).sum(dim=1)
        per_image, ids = accelerator.gather_for_metrics((per_image, ids))
        squared_error_sum += float(per_image.double().sum())
        pixel_count += per_image.shape[0] * pixels[0].numel()
        num_images += per_image.shape[0]
        counts += torch.bincount(ids.flatten().cpu(), minlength=codebook_size).double()
    model.train()
    mse = squared_error_sum / max(pixel_count, 1)
    probabilities = counts / counts.sum().clamp(min=1)
    entropy = float(-(probabilities * probabilities.clamp(min=1e-30).log()).sum())
    return {
        "reconstruction_mse": mse,
        "psnr_db": 10 * math.log10(4.0 / mse) if mse > 0 else float("inf"),
        "codebook_perplexity": math.exp(entropy),
        "codebook_used_fraction": float((counts > 0).double().mean()),
        "num_images": num_images,
    }


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)),
        # The shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed, device_specific=True)  # device_specific: replicas draw different dead-code picks, flips

    if args.pretrained_vqvae_name_or_path:
        # Continue from a trained tokenizer: its own config, so codebook and levels match the weights.
        pretrained = MGNTVQModel.from_pretrained(args.pretrained_vqvae_name_or_path)
        config = pretrained.config
        for name, given in (("resolution", args.resolution), ("num_frames", args.num_frames)):
            wanted = config.num_frames if name == "num_frames" else list(config.resolution)
            if given is not None and (list(given) if name == "resolution" else given) != wanted:
                raise ValueError(f"--{name} {given} differs from the pretrained tokenizer's {wanted} "
                                 f"({args.pretrained_vqvae_name_or_path}); omit it to keep the tokenizer's")
    else:
        pretrained = None
        config = load_vq_config(args.vq_config, args.resolution, args.num_frames)
    train_dataset, validation_dataset = build_datasets(args, config)
    logger.info(f"tokenizer: {config.num_channels} channels at {config.resolution}, f={config.downsample_factor}, "
                f"token grid {config.token_grid}, {config.codebook_size} codes; {len(train_dataset)} training "
                f"{'videos' if config.is_video else 'images'}")

    model = pretrained if pretrained is not None else MGNTVQModel(config)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_incomplete_checkpoints(output_dir)

    def save_config_with_state(models, weights, folder):
        # checkpoint-<step>/ then holds config.json + model.safetensors: MGNTVQModel.from_pretrained loads it.
        if accelerator.is_main_process:
            config.save_pretrained(folder)

    accelerator.register_save_state_pre_hook(save_config_with_state)

    train_dataloader = DataLoader(train_dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True,
                                  collate_fn=collate_examples, num_workers=args.dataloader_num_workers,
                                  worker_init_fn=ignore_stop_signals)
    if len(train_dataloader) == 0:
        raise ValueError(f"{len(train_dataset)} training images give no full batch of {args.train_batch_size}")

    learning_rate = args.learning_rate
    if args.scale_lr:
        learning_rate *= args.train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    use_adversarial = args.adversarial_weight > 0
    discriminator = discriminator_optimizer = None
    if use_adversarial:
        discriminator = PatchDiscriminator(config.num_channels, args.discriminator_channels, args.discriminator_layers)
        discriminator_optimizer = torch.optim.AdamW(
            discriminator.parameters(), lr=args.discriminator_learning_rate or learning_rate,
            betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)

    # Steps: per-process batches / accumulation, as in diffusers' scripts (the prepared scheduler steps
    # once per process, hence the factor on its step counts).
    batches_per_epoch = math.ceil(len(train_dataloader) / accelerator.num_processes)
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch(
        batches_per_epoch, args.gradient_accumulation_steps)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_train_steps * accelerator.num_processes)

    if use_adversarial:
        model, discriminator, optimizer, discriminator_optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            model, discriminator, optimizer, discriminator_optimizer, train_dataloader, lr_scheduler)
    else:
        model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            model, optimizer, train_dataloader, lr_scheduler)
    per_epoch = steps_per_epoch(len(train_dataloader), args.gradient_accumulation_steps)
    num_epochs = math.ceil(max_train_steps / per_epoch)

    validation_images = eval_dataloader = None
    if validation_dataset is not None:
        count = min(args.num_validation_images, len(validation_dataset))
        validation_images = collate_examples([validation_dataset[i] for i in range(count)])["pixel_values"]
        eval_dataloader = accelerator.prepare(DataLoader(
            validation_dataset, batch_size=args.train_batch_size, shuffle=False, collate_fn=collate_examples,
            num_workers=args.dataloader_num_workers, worker_init_fn=ignore_stop_signals))

    if accelerator.is_main_process:
        accelerator.init_trackers("mgnt-tokenizer", config={k: v for k, v in vars(args).items()
                                                            if isinstance(v, (int, float, str, bool))})
    def check_checkpoint(path):
        # The discriminator is the second prepared model (model_1.safetensors) of an adversarial run.
        check_resume_setting(path, "--adversarial_weight > 0", (path / "model_1.safetensors").is_file(),
                             use_adversarial)

    global_step = resume_training(accelerator, output_dir, args.resume_from_checkpoint, max_train_steps,
                                  check_checkpoint)
    checkpoints = CheckpointManager(accelerator, output_dir, args.checkpoints_total_limit)
    first_epoch, skip_batches = resume_position(global_step, args.gradient_accumulation_steps, len(train_dataloader))

    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(f"training {max_train_steps} steps of {total_batch} images ({accelerator.num_processes} processes x "
                f"{args.train_batch_size} x {args.gradient_accumulation_steps} accumulation), {per_epoch} steps/epoch")
    metrics_path = output_dir / args.logging_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)

    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)
    unwrapped_discriminator = accelerator.unwrap_model(discriminator) if use_adversarial else None
    commitment_weight = config.commitment_weight
    stopped_by_signal = out_of_time = False
    start_time = time.perf_counter()  # elapsed times and the --max_train_seconds budget
    with StopSignalGuard() as guard:
        for epoch in range(first_epoch, num_epochs):
            if global_step >= max_train_steps or stopped_by_signal or out_of_time:
                break
            loader = epoch_dataloader(accelerator, train_dataloader, epoch, skip_batches if epoch == first_epoch else 0)
            for batch in loader:
                pixels = batch["pixel_values"]
                adversarial_on = use_adversarial and global_step >= args.adversarial_start_step
                models = (model, discriminator) if use_adversarial else (model,)
                with accelerator.accumulate(*models):
                    output = model(pixels)
                    if args.reconstruction_loss == "l1":
                        reconstruction_loss = F.l1_loss(output.reconstruction.float(), pixels.float())
                    else:
                        reconstruction_loss = F.mse_loss(output.reconstruction.float(), pixels.float())
                    losses = {"reconstruction_loss": reconstruction_loss, "codebook_loss": output.codebook_loss,
                              "commitment_loss": output.commitment_loss}
                    loss = reconstruction_loss + output.codebook_loss + commitment_weight * output.commitment_loss
                    if adversarial_on:
                        # The generator's adversarial term must not train the discriminator: run its
                        # unwrapped copy with frozen parameters (no DDP hooks, no gradients into it).
                        unwrapped_discriminator.requires_grad_(False)
                        with accelerator.autocast():
                            losses["generator_adversarial_loss"] = -unwrapped_discriminator(
                                output.reconstruction).float().mean()
                        unwrapped_discriminator.requires_grad_(True)
                        loss = loss + args.adversarial_weight * losses["generator_adversarial_loss"]
                    losses["loss"] = loss
                    # Raises on NaN/inf before the optimizer step; with no discriminator loss to check, commits
                    # the checkpoint these weights came from.
                    checkpoints.check_losses(losses, global_step + 1, commit=not adversarial_on)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)

                    if adversarial_on:
                        both = torch.cat([pixels, output.reconstruction.detach()])
                        logits = discriminator(both).float()
                        real_logits, fake_logits = logits.chunk(2)
                        discriminator_loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
                        checkpoints.check_losses({"discriminator_loss": discriminator_loss}, global_step + 1)
                        accelerator.backward(discriminator_loss)
                        if accelerator.sync_gradients and args.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(discriminator.parameters(), args.max_grad_norm)
                        discriminator_optimizer.step()
                        discriminator_optimizer.zero_grad(set_to_none=True)
                        losses["discriminator_loss"] = discriminator_loss

                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                progress.update(1)

                if global_step % args.logging_steps == 0 or global_step == max_train_steps:
                    values = {name: value.detach().float() for name, value in losses.items()}
                    values["perplexity"] = output.perplexity.detach().float()
                    values["codes_used_fraction"] = output.codes_used_fraction.detach().float()
                    stacked = accelerator.reduce(torch.stack(list(values.values())).to(accelerator.device), "mean")
                    logs = {name: float(value) for name, value in zip(values, stacked.tolist())}
                    logs["restarted_codes"] = int(output.num_restarted_codes)
                    logs["lr"] = lr_scheduler.get_last_lr()[0]
                    accelerator.log(logs, step=global_step)
                    progress.set_postfix(rec=f"{logs['reconstruction_loss']:.4f}", ppl=f"{logs['perplexity']:.0f}")
                    if accelerator.is_main_process:
                        with metrics_path.open("a") as file:
                            file.write(json.dumps({"step": global_step, "epoch": epoch,
                                                   "elapsed_s": round(time.perf_counter() - start_time, 2), **logs}) + "\n")

                if global_step % args.checkpointing_steps == 0:
                    checkpoints.save(global_step)
                if validation_images is not None and global_step % args.validation_steps == 0 \
                        and accelerator.is_main_process:
                    mse = log_validation(accelerator.unwrap_model(model), validation_images, accelerator, args,
                                         global_step)
                    accelerator.log({"validation_mse": mse}, step=global_step)
                    logger.info(f"step {global_step}: validation reconstruction MSE {mse:.5f}")

                if time_budget_spent(accelerator, start_time, args.max_train_seconds):
                    logger.info(f"--max_train_seconds {args.max_train_seconds} reached at step {global_step}")
                    out_of_time = True
                    break
                if guard.should_stop(accelerator):
                    stopped_by_signal = True
                    break
                if global_step >= max_train_steps:
                    break

    progress.close()
    if stopped_by_signal:
        exit_after_signal(accelerator, guard, checkpoints.finish(global_step), global_step)
    if out_of_time:
        checkpoints.finish(global_step)  # the run resumes from here with the same command
    else:
        checkpoints.commit()  # the last step's checkpoint, if it saved one: no later loss will test it

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir)
        logger.info(f"saved the tokenizer to {output_dir} after {global_step} steps "
                    f"({time.perf_counter() - start_time:.0f} s of training)")
        if validation_images is not None:
            log_validation(unwrapped, validation_images, accelerator, args, global_step)
    if eval_dataloader is not None:
        results = evaluate(model, eval_dataloader, accelerator, config.codebook_size)
        results.update(step=global_step, train_seconds=round(time.perf_counter() - start_time, 1))
        accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=global_step)
        if accelerator.is_main_process:
            (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
            logger.info(f"evaluation: {results}")
    if args.push_to_hub and accelerator.is_main_process:
        unwrapped.push_to_hub(args.hub_model_id, token=args.hub_token,
                              commit_message=f"MGNT VQ tokenizer after {global_step} steps")
    end_training(accelerator)  # several processes exit in there, skipping the gloo teardown: see its docstring


if __name__ == "__main__":
    main()
