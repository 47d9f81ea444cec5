#!/usr/bin/env python
"""Train the nested MGNT transformer with accelerate (one GPU, many GPUs, many nodes, or the CPU).

    accelerate launch [--num_processes N | --multi_gpu | --config_file F] training/train_mgnt.py \
        --vqvae_name_or_path runs/vq-fashion-mnist --dataset_name data/fashion-mnist \
        --transformer_config training/configs/mgnt-fashion-mnist.json --output_dir runs/mgnt \
        --train_batch_size 256 --learning_rate 1e-3 --max_train_steps 20000 --mixed_precision bf16

Images are tokenized once with the VQ model into a `datasets` Arrow cache (reused across runs,
invalidated when the tokenizer, preprocessing or data change). The objective is MaskGIT's masked
cross-entropy with nested joint training (`mgnt_hf.nested_training`): every width learns the
ground truth, smaller widths also distil the full width's predictions. The output folder ends up
holding `checkpoint-<step>/` folders (atomic, resumable) and the final pipeline
(`MGNTPipeline.from_pretrained(output_dir)`), with the EMA weights under `--use_ema`. SIGINT/SIGTERM
finish the current step, save a checkpoint and exit with status 130/143; how to stop a run, resume it
and what happens on a NaN loss or a full disk: training/README.md.

Video: with a video tokenizer (`config.num_frames` set) the data are videos (`mgnt_hf.video_io`: a
save_to_disk folder, a Hub dataset, or class folders of video files / frame folders), the token grid
is `(num_frames / ft, h, w)`, and the saved pipeline is an `MGNTVideoPipeline`. `--context_frames K`
trains frame prediction: the tokens of the first K frames are given (never masked) in a fraction
`--context_probability` of the examples, the rest are class-conditional generation, so one model
does both (`pipe(labels)` and `pipe(labels or None, context_frames=...)`):

    accelerate launch training/train_mgnt.py --vqvae_name_or_path runs/tokenizer-mfm \
        --dataset_name data/moving-fashion-mnist --transformer_config training/configs/mgnt-moving-fashion-mnist.json \
        --context_frames 4 --context_probability 0.5 --output_dir runs/mgnt-mfm ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mgnt_hf import MGNTConfig, MGNTPipeline, MGNTScheduler, MGNTTransformer, MGNTVideoPipeline, MGNTVQModel
from mgnt_hf.configuration_mgnt import PRESETS
from mgnt_hf.data import ImageTransform, RESIZE_MODES, check_images, decode_image, id2label_from_dataset, \
    load_image_dataset, resolve_columns
from mgnt_hf.masking import MASK_SCHEDULES
from mgnt_hf.scheduling_mgnt import DEFAULT_WIDTH_SCHEDULE, WIDTH_SCHEDULE_PRESETS
from mgnt_hf.nested_training import DISTILL_FROM, WIDTHS_PER_STEP, MGNTNestedTrainingObjective
from mgnt_hf.tokenized_dataset import LABEL_COLUMN, TOKENS_COLUMN, tokenize_dataset
from mgnt_hf.video_io import VideoTransform, check_videos, load_video_dataset, resolve_video_columns
from mgnt_hf.training_utils import CheckpointManager, EMAModel, StopSignalGuard, check_launch, check_resume_setting, \
    checkpoint_has_ema, end_training, epoch_dataloader, exit_after_signal, ignore_stop_signals, \
    remove_incomplete_checkpoints, resume_position, resume_training, steps_per_epoch, time_budget_spent

logger = get_logger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--vqvae_name_or_path", required=True,
                      help="MGNTVQModel folder or Hub id (a pipeline folder with a vqvae/ subfolder works too)")
    data.add_argument("--dataset_name", default=None, help="HF datasets name or a local dataset folder")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_data_dir", default=None, help="image folder with one subfolder per class")
    data.add_argument("--image_column", default=None, help="image column (default: 'image' or the only image column)")
    data.add_argument("--video_column", default=None, help="video data: the video column (default: 'video')")
    data.add_argument("--num_frames", type=int, default=None,
                      help="video data: frames per clip (default: the tokenizer's num_frames); fixes the token grid")
    data.add_argument("--frame_stride", type=int, default=1, help="video data: keep every k-th frame")
    data.add_argument("--clip_start", choices=["start", "center"], default="start",
                      help="video data: where clips are cut from longer videos")
    data.add_argument("--label_column", default="label")
    data.add_argument("--resolution", type=int, default=None,
                      help="image size fed to the tokenizer (default: the tokenizer's config.resolution)")
    data.add_argument("--resize_mode", default="center_crop", choices=RESIZE_MODES,
                      help="how images reach the resolution ('pad' for Fashion-MNIST 28 -> 32)")
    data.add_argument("--random_flip", action="store_true",
                      help="also train on horizontally flipped images (stored as tokens of the flipped images)")
    data.add_argument("--token_cache_dir", default=None,
                      help="where tokenized datasets are cached (default: <output_dir>/../token-cache)")
    data.add_argument("--skip_bad_images", action="store_true")
    data.add_argument("--cache_dir", default=None, help="datasets download cache")

    model = parser.add_argument_group("model")
    model.add_argument("--transformer_config", default=None,
                       help=f"MGNTConfig JSON file or a preset name {sorted(PRESETS)}; codebook_size, token_grid, "
                            "num_classes and id2label come from the tokenizer and the data")
    model.add_argument("--pretrained_transformer_name_or_path", default=None,
                       help="MGNTTransformer folder or Hub id to continue from or fine-tune")
    model.add_argument("--class_dropout_prob", type=float, default=None, help="override the config's value")

    objective = parser.add_argument_group("objective")
    objective.add_argument("--mask_schedule", default="cosine", choices=MASK_SCHEDULES)
    objective.add_argument("--distillation_weight", type=float, default=1.0)
    objective.add_argument("--distillation_temperature", type=float, default=1.0)
    objective.add_argument("--distill_from", default="full", choices=DISTILL_FROM)
    objective.add_argument("--widths_per_step", default="all", choices=WIDTHS_PER_STEP)
    objective.add_argument("--label_smoothing", type=float, default=0.1)
    objective.add_argument("--width_loss_weights", type=float, nargs="+", default=None,
                           help="one loss weight per nested width, smallest first (default: 1 each)")
    objective.add_argument("--context_frames", type=int, default=0,
                           help="video: frame prediction training, the first K frames' tokens are given (never "
                                "masked); K a multiple of the tokenizer's temporal_downsample_factor, < num_frames")
    objective.add_argument("--context_probability", type=float, default=1.0,
                           help="with --context_frames: fraction of examples that get the context (the others are "
                                "class-conditional generation)")

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train_batch_size", type=int, default=64, help="per process")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--max_train_steps", type=int, default=None)
    train.add_argument("--num_train_epochs", type=int, default=None, help="used when --max_train_steps is not set")
    train.add_argument("--max_train_seconds", type=float, default=None,
                       help="wall-clock budget: stop after the step that crosses it, save a checkpoint and the pipeline")
    train.add_argument("--learning_rate", type=float, default=1e-4)
    train.add_argument("--scale_lr", action="store_true", help="multiply the lr by processes x batch x accumulation")
    train.add_argument("--lr_scheduler", default="cosine",
                       help="diffusers get_scheduler name: linear, cosine, constant, constant_with_warmup, ...")
    train.add_argument("--lr_warmup_steps", type=int, default=500)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.96)
    train.add_argument("--adam_weight_decay", type=float, default=0.045)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--use_ema", action="store_true")
    train.add_argument("--ema_decay", type=float, default=0.999)
    train.add_argument("--ema_min_decay", type=float, default=0.0,
                       help="floor of the EMA decay. diffusers' EMAModel copies the weights at the first update "
                            "and then warms the decay up as (1 + t) / (10 + t), so a run of t steps never averages "
                            "with more than that (0.984 after 580 steps, whatever --ema_decay says). The warm-up "
                            "forgets a random start; when continuing trained weights, set it to --ema_decay so the "
                            "average has the requested decay from the second update on")
    train.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"],
                       help="overrides the accelerate config")
    train.add_argument("--gradient_checkpointing", action="store_true")
    train.add_argument("--allow_tf32", action="store_true")
    train.add_argument("--dataloader_num_workers", type=int, default=0)
    train.add_argument("--checkpointing_steps", type=int, default=1000)
    train.add_argument("--checkpoints_total_limit", type=int, default=None)
    train.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    train.add_argument("--logging_steps", type=int, default=20)

    validation = parser.add_argument_group("validation and the saved pipeline")
    validation.add_argument("--width_schedule", default=None,
                            help="decode-time width schedule saved with the pipeline: a preset name "
                                 f"{sorted(WIDTH_SCHEDULE_PRESETS)} or JSON like '[[0.5, 6], [1.0, 6]]' "
                                 f"(default: the scheduler's, {DEFAULT_WIDTH_SCHEDULE!r})")
    validation.add_argument("--validation_steps", type=int, default=None,
                            help="sample a grid (one image per class; baseline and MaGNeTS schedule) every N steps")
    validation.add_argument("--validation_guidance_scale", type=float, default=3.0)
    validation.add_argument("--validation_num_classes", type=int, default=10, help="classes shown in the grid")

    hub = parser.add_argument_group("hub and logging")
    hub.add_argument("--report_to", default="tensorboard", help="accelerate tracker(s), or 'none'")
    hub.add_argument("--logging_dir", default="logs")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument("--hub_model_id", default=None)
    hub.add_argument("--hub_token", default=None)
    hub.add_argument("--hub_private", action="store_true")

    args = parser.parse_args(argv)
    if args.width_schedule is not None and args.width_schedule not in WIDTH_SCHEDULE_PRESETS:
        try:
            args.width_schedule = json.loads(args.width_schedule)
        except json.JSONDecodeError:
            parser.error(f"--width_schedule must be a preset {sorted(WIDTH_SCHEDULE_PRESETS)} or JSON, "
                         f"got {args.width_schedule!r}")
    if (args.dataset_name is None) == (args.train_data_dir is None):
        parser.error("give exactly one of --dataset_name and --train_data_dir")
    if args.max_train_steps is None and args.num_train_epochs is None:
        parser.error("give --max_train_steps or --num_train_epochs")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        parser.error(f"--max_train_steps must be >= 1, got {args.max_train_steps}")
    if args.max_train_seconds is not None and not args.max_train_seconds >= 0:  # NaN fails this too
        parser.error(f"--max_train_seconds must be >= 0, got {args.max_train_seconds}")
    if not 0.0 <= args.ema_decay < 1.0:
        parser.error(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    if not 0.0 <= args.ema_min_decay <= args.ema_decay:
        parser.error(f"--ema_min_decay must be in [0, --ema_decay={args.ema_decay}], got {args.ema_min_decay}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    if args.context_frames < 0:
        parser.error(f"--context_frames must be >= 0, got {args.context_frames}")
    if not 0.0 <= args.context_probability <= 1.0:
        parser.error(f"--context_probability must be in [0, 1], got {args.context_probability}")
    if args.num_frames is not None and args.num_frames < 1:
        parser.error(f"--num_frames must be >= 1, got {args.num_frames}")
    return args


def load_vqvae(name_or_path: str, num_frames: int | None = None) -> MGNTVQModel:
    """A tokenizer folder, a pipeline folder (its `vqvae/`), or a Hub id. `num_frames` sets a video tokenizer's
    clip length (it is fully convolutional in time; the clip length fixes the transformer's token grid)."""
    if os.path.isfile(os.path.join(name_or_path, "vqvae", "config.json")):
        vqvae = MGNTVQModel.from_pretrained(name_or_path, subfolder="vqvae")
    else:
        vqvae = MGNTVQModel.from_pretrained(name_or_path)
    if num_frames is not None:
        if not vqvae.config.is_video:
            raise ValueError(f"--num_frames {num_frames} needs a video tokenizer; {name_or_path} is an image tokenizer")
        vqvae.config.num_frames = num_frames
        vqvae.config._validate_vq_fields()
    return vqvae


def check_resolution(args, vqvae: MGNTVQModel) -> None:
    """`--resolution` must be the tokenizer's: its config fixes the token grid the transformer is built for.
    Checked before any data is loaded or tokenized."""
    if args.resolution is None:
        return
    given = (args.resolution, args.resolution)
    if given != tuple(vqvae.config.resolution):
        raise ValueError(f"--resolution {args.resolution} does not match the tokenizer {args.vqvae_name_or_path}, "
                         f"which takes images of {tuple(vqvae.config.resolution)} (config.resolution; token grid "
                         f"{tuple(vqvae.config.token_grid)}); omit --resolution or give "
                         f"{vqvae.config.resolution[0]}, or train a tokenizer at {args.resolution}")


def check_video_arguments(args, vqvae: MGNTVQModel) -> int:
    """Refuse video-only flags with an image tokenizer; return the context tokens per example for
    `--context_frames` (0 without). ValueError naming the flag and the allowed values."""
    config = vqvae.config
    if not config.is_video:
        given = [flag for flag, value, default in (
            ("--video_column", args.video_column, None), ("--frame_stride", args.frame_stride, 1),
            ("--clip_start", args.clip_start, "start"), ("--context_frames", args.context_frames, 0),
            ("--context_probability", args.context_probability, 1.0)) if value != default]
        if given:
            raise ValueError(f"{', '.join(given)} need video data and a video tokenizer; "
                             f"{args.vqvae_name_or_path} is an image tokenizer")
        return 0
    if args.context_frames == 0:
        if args.context_probability != 1.0:
            raise ValueError(f"--context_probability {args.context_probability} needs --context_frames")
        return 0
    factor = config.temporal_downsample_factor
    if args.context_frames % factor or args.context_frames >= config.num_frames:
        raise ValueError(f"--context_frames {args.context_frames} must be a multiple of {factor} "
                         f"(temporal_downsample_factor) below num_frames={config.num_frames}; allowed: "
                         f"{list(range(factor, config.num_frames, factor))}")
    _, height, width = config.token_grid
    return args.context_frames // factor * height * width


def build_transformer(args, vqvae: MGNTVQModel, id2label: dict[int, str]) -> MGNTTransformer:
    """The transformer to train; its codebook, token grid and classes must match the tokenizer and data."""
    data_fields = dict(codebook_size=vqvae.config.codebook_size, token_grid=tuple(vqvae.config.token_grid),
                       num_classes=len(id2label), id2label=id2label)
    if args.pretrained_transformer_name_or_path:
        transformer = MGNTTransformer.from_pretrained(args.pretrained_transformer_name_or_path)
        config = transformer.config
    else:
        if args.transformer_config is None:
            raise ValueError(f"give --transformer_config (a JSON file or a preset {sorted(PRESETS)}) or "
                             "--pretrained_transformer_name_or_path")
        if args.transformer_config in PRESETS:
            config = MGNTConfig.from_preset(args.transformer_config, **data_fields)
        elif os.path.isfile(args.transformer_config):
            with open(args.transformer_config) as handle:
                fields = json.load(handle)
            fields.pop("model_type", None)
            for name in ("codebook_size", "token_grid", "num_classes"):
                if fields.get(name) is not None:
                    given = tuple(fields[name]) if name == "token_grid" else fields[name]
                    if given != data_fields[name]:
                        raise ValueError(f"--transformer_config {args.transformer_config} has {name}={given!r} but the "
                                         f"tokenizer and data need {data_fields[name]!r}")
            config = MGNTConfig(**{**fields, **data_fields})
        else:
            raise OSError(f"--transformer_config {args.transformer_config!r} is neither a JSON file nor a preset "
                          f"{sorted(PRESETS)}")
        transformer = MGNTTransformer(config)
    for name in ("codebook_size", "token_grid", "num_classes"):
        if getattr(config, name) != data_fields[name]:
            raise ValueError(f"the transformer has {name}={getattr(config, name)!r} but the tokenizer and data give "
                             f"{data_fields[name]!r}")
    if args.class_dropout_prob is not None:
        config.class_dropout_prob = args.class_dropout_prob
        config._validate_mgnt_fields()
    return transformer


def load_training_images(args, video: bool = False):
    """The training split, its image (or video) and label columns and `id2label`; bad columns fail here."""
    if video:
        dataset = load_video_dataset(dataset_name=args.dataset_name, train_data_dir=args.train_data_dir, split="train",
                                     dataset_config_name=args.dataset_config_name, cache_dir=args.cache_dir,
                                     video_column=args.video_column)
        video_column, label_column = resolve_video_columns(dataset, args.video_column, args.label_column,
                                                           require_label=True)
        return dataset, video_column, label_column, id2label_from_dataset(dataset, label_column)
    dataset = load_image_dataset(dataset_name=args.dataset_name, train_data_dir=args.train_data_dir,
                                 split="train", dataset_config_name=args.dataset_config_name, cache_dir=args.cache_dir)
    image_column, label_column = resolve_columns(dataset, args.image_column, args.label_column, require_label=True)
    return dataset, image_column, label_column, id2label_from_dataset(dataset, label_column)


def tokenize_training_images(args, accelerator: Accelerator, vqvae: MGNTVQModel, dataset, image_column: str,
                             label_column: str):
    """Token grids of the training images (the main process checks and encodes on a cache miss; the
    others then read its cache). Bad images fail here, before training."""
    cache_dir = args.token_cache_dir or os.path.join(os.path.dirname(os.path.abspath(args.output_dir)), "token-cache")
    if vqvae.config.is_video:
        config = vqvae.config
        transform = VideoTransform(num_frames=config.num_frames, num_channels=config.num_channels,
                                   resolution=args.resolution or config.resolution, resize_mode=args.resize_mode,
                                   frame_stride=args.frame_stride, clip_start=args.clip_start)
        with accelerator.main_process_first():
            return tokenize_dataset(
                dataset, vqvae, transform, cache_dir,
                preprocessing={"video": True, "num_frames": transform.num_frames,
                               "resolution": list(transform.resolution), "num_channels": transform.num_channels,
                               "resize_mode": transform.resize_mode, "frame_stride": transform.frame_stride,
                               "clip_start": transform.clip_start, "skip_bad_videos": args.skip_bad_images},
                image_column=image_column, label_column=label_column, flip=args.random_flip,
                prepare=lambda rows: check_videos(rows, image_column, transform, skip_bad_videos=args.skip_bad_images),
                device=accelerator.device, show_progress=accelerator.is_local_main_process,
                batch_size=32)
    resolution = args.resolution or vqvae.config.resolution
    transform = ImageTransform(num_channels=vqvae.config.num_channels, resolution=resolution,
                               resize_mode=args.resize_mode)
    with accelerator.main_process_first():
        return tokenize_dataset(
            dataset, vqvae, lambda value: transform(decode_image(value)), cache_dir,
            preprocessing={"resolution": list(transform.resolution), "num_channels": transform.num_channels,
                           "resize_mode": transform.resize_mode, "pad_value": transform.pad_value,
                           "skip_bad_images": args.skip_bad_images},
            image_column=image_column, label_column=label_column, flip=args.random_flip,
            prepare=lambda rows: check_images(rows, image_column, skip_bad_images=args.skip_bad_images),
            device=accelerator.device, show_progress=accelerator.is_local_main_process)


def make_scheduler(args, transformer: MGNTTransformer) -> MGNTScheduler:
    """The scheduler saved with the pipeline; raises ValueError if its widths are not the transformer's."""
    scheduler = MGNTScheduler() if args.width_schedule is None else MGNTScheduler(width_schedule=args.width_schedule)
    scheduler.step_widths(transformer.config.hidden_size, transformer.config.nested_widths)
    return scheduler


def collate_tokens(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {"token_ids": torch.stack([row[TOKENS_COLUMN].long() for row in rows]),
            "class_labels": torch.stack([row[LABEL_COLUMN] for row in rows]).long()}


def make_pipeline(transformer: MGNTTransformer, vqvae: MGNTVQModel, scheduler: MGNTScheduler):
    """`MGNTVideoPipeline` for a video tokenizer, else `MGNTPipeline`."""
    if vqvae.config.is_video:
        return MGNTVideoPipeline(transformer=transformer, vqvae=vqvae, scheduler=scheduler)
    return MGNTPipeline(transformer=transformer, vqvae=vqvae, scheduler=scheduler)


@torch.no_grad()
def log_video_validation(accelerator, transformer, vqvae, id2label, args, step):
    """A frame grid: one video per class (rows), frames left to right, MaskGIT baseline then MaGNeTS schedule."""
    from PIL import Image

    pipeline = make_pipeline(transformer, vqvae, make_scheduler(args, transformer))
    pipeline.set_progress_bar_config(disable=True)
    labels = list(range(min(args.validation_num_classes, len(id2label))))
    blocks = []
    for schedule in ([[1.0, 12]], None):
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        frames = pipeline(labels, guidance_scale=args.validation_guidance_scale, generator=generator,
                          width_schedule=schedule, output_type="np").frames  # [B, T, H, W, C]
        blocks.append(np.concatenate([np.concatenate(list(video), axis=1) for video in frames], axis=0))
    grid = (np.concatenate(blocks, axis=0) * 255).round().astype(np.uint8)
    folder = Path(args.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(folder / f"step-{step:07d}.png")
    transformer.train()


@torch.no_grad()
def log_validation(accelerator, transformer, vqvae, id2label, args, step):
    """A grid: one image per class, rows = MaskGIT baseline and the default MaGNeTS schedule."""
    from PIL import Image

    if vqvae.config.is_video:
        return log_video_validation(accelerator, transformer, vqvae, id2label, args, step)
    pipeline = make_pipeline(transformer, vqvae, make_scheduler(args, transformer))
    pipeline.set_progress_bar_config(disable=True)
    labels = list(range(min(args.validation_num_classes, len(id2label))))
    rows = {}
    for name, schedule in (("maskgit", [[1.0, 12]]), ("magnets", None)):
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        output = pipeline(labels, guidance_scale=args.validation_guidance_scale, generator=generator,
                          width_schedule=schedule, output_type="pil")
        rows[name] = output.images
    width, height = rows["maskgit"][0].size
    grid = Image.new(rows["maskgit"][0].mode, (width * len(labels), height * len(rows)))
    for row_index, images in enumerate(rows.values()):
        for column, image in enumerate(images):
            grid.paste(image, (column * width, row_index * height))
    folder = Path(args.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    grid.save(folder / f"step-{step:07d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            import numpy as np

            array = np.asarray(grid.convert("RGB"))
            tracker.writer.add_image("validation/maskgit_top_magnets_bottom", array, step, dataformats="HWC")
    transformer.train()


def main(argv=None):
    args = parse_args(argv)
    report_to = None if args.report_to in (None, "none") else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir,
                                            logging_dir=os.path.join(args.output_dir, args.logging_dir)),
        # The data order then depends only on seed and epoch, so a resumed run sees the same batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    check_launch(accelerator)
    if accelerator.distributed_type == DistributedType.FSDP and (args.use_ema or args.validation_steps):
        # Both read the model's parameters on one process (the EMA copy, the sampling pipeline); under FSDP
        # those are shards.
        raise ValueError(f"--use_ema ({args.use_ema}) and --validation_steps ({args.validation_steps}) are not "
                         "supported with FSDP; train without them, or with DDP (multi_gpu_8.yaml)")
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    set_seed(args.seed, device_specific=True)  # each process masks differently
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        remove_incomplete_checkpoints(args.output_dir)

    vqvae = load_vqvae(args.vqvae_name_or_path, args.num_frames).to(accelerator.device).eval().requires_grad_(False)
    check_resolution(args, vqvae)
    num_context_tokens = check_video_arguments(args, vqvae)
    dataset, image_column, label_column, id2label = load_training_images(args, video=vqvae.config.is_video)
    transformer = build_transformer(args, vqvae, id2label)
    make_scheduler(args, transformer)  # a schedule the model cannot run fails now, not after training
    tokens = tokenize_training_images(args, accelerator, vqvae, dataset, image_column, label_column)
    if args.gradient_checkpointing:
        enable = getattr(transformer, "activation_checkpointing_enable", None) or transformer.gradient_checkpointing_enable
        enable()
    transformer.train()
    objective = MGNTNestedTrainingObjective(
        transformer, mask_schedule=args.mask_schedule, distillation_weight=args.distillation_weight,
        distillation_temperature=args.distillation_temperature, distill_from=args.distill_from,
        widths_per_step=args.widths_per_step, label_smoothing=args.label_smoothing,
        width_loss_weights=args.width_loss_weights)

    ema = None
    if args.use_ema:
        ema = EMAModel(transformer.parameters(), decay=args.ema_decay, min_decay=args.ema_min_decay,
                       model_cls=MGNTTransformer, model_config=transformer.config)
        ema.to(accelerator.device)

    learning_rate = args.learning_rate
    if args.scale_lr:
        learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    decay, no_decay = [], []
    for name, parameter in transformer.named_parameters():
        # Weight decay on matrices only: not on biases, norms or embedding tables.
        (decay if parameter.dim() == 2 and "embeddings" not in name else no_decay).append(parameter)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.adam_weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2))

    tokens = tokens.with_format("torch", columns=[TOKENS_COLUMN, LABEL_COLUMN])
    dataloader = DataLoader(tokens, batch_size=args.train_batch_size, shuffle=True, drop_last=True,
                            collate_fn=collate_tokens, num_workers=args.dataloader_num_workers,
                            worker_init_fn=ignore_stop_signals)
    if len(dataloader) == 0:
        raise ValueError(f"{len(tokens)} training examples are fewer than one batch of {args.train_batch_size}")
    batches_per_process = math.ceil(len(dataloader) / accelerator.num_processes)
    updates_per_epoch = steps_per_epoch(batches_per_process, args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * updates_per_epoch
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_train_steps * accelerator.num_processes)
    objective, optimizer, dataloader, lr_scheduler = accelerator.prepare(objective, optimizer, dataloader, lr_scheduler)

    if accelerator.is_main_process:
        tracker_config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("mgnt", config=tracker_config)

    def check_checkpoint(path):
        check_resume_setting(path, "--use_ema", checkpoint_has_ema(path), args.use_ema)

    global_step = start_step = resume_training(accelerator, args.output_dir, args.resume_from_checkpoint,
                                               max_train_steps, check_checkpoint, ema=ema)
    checkpoints = CheckpointManager(accelerator, args.output_dir, args.checkpoints_total_limit, ema=ema)
    epoch, skip_batches = resume_position(global_step, args.gradient_accumulation_steps, len(dataloader))

    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(f"{len(tokens)} token grids, {max_train_steps} steps of {total_batch} examples, "
                f"{sum(p.numel() for p in transformer.parameters()):,} parameters, widths "
                f"{list(transformer.config.nested_widths)}", main_process_only=True)
    progress = tqdm(range(max_train_steps), initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)
    tokens_per_example = transformer.config.num_grid_tokens
    window_start, window_examples = time.perf_counter(), 0
    stopped_by_signal = False
    draw_generator = torch.Generator(device=accelerator.device)
    run_start = time.perf_counter()
    accumulated = 0
    unwrapped = accelerator.unwrap_model(objective).transformer

    with StopSignalGuard() as guard:
        while global_step < max_train_steps and not stopped_by_signal:
            for batch in epoch_dataloader(accelerator, dataloader, epoch, skip_batches):
                # Masks and label dropout depend only on (seed, process, micro-step): a resumed run draws
                # exactly what the uninterrupted run drew, whatever else consumed the global RNG.
                micro_step = global_step * args.gradient_accumulation_steps + accumulated
                draw_generator.manual_seed(int(np.random.SeedSequence(
                    [args.seed, accelerator.process_index, micro_step]).generate_state(1)[0]))
                accumulated += 1
                context = None
                if num_context_tokens:
                    given = torch.rand(batch["token_ids"].shape[0], device=draw_generator.device,
                                       generator=draw_generator) < args.context_probability
                    context = (given.long() * num_context_tokens).to(batch["token_ids"].device)
                with accelerator.accumulate(objective):
                    output = objective(batch["token_ids"], batch["class_labels"], generator=draw_generator,
                                       num_context_tokens=context)
                    # Raises on NaN/inf before the optimizer step; commits the checkpoint these weights came from.
                    checkpoints.check_losses({"loss": output.loss}, global_step + 1)
                    accelerator.backward(output.loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(objective.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                window_examples += batch["token_ids"].shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                accumulated = 0
                progress.update(1)
                if ema is not None:
                    ema.step(unwrapped.parameters())

                if global_step % args.logging_steps == 0 or global_step == max_train_steps:
                    elapsed = time.perf_counter() - window_start
                    logs = {f"loss/width_{w}": accelerator.reduce(l.float(), "mean").item()
                            for w, l in output.width_losses.items()}
                    logs.update({f"distillation/width_{w}": accelerator.reduce(l.float(), "mean").item()
                                 for w, l in output.distillation_losses.items()})
                    logs["loss/total"] = accelerator.reduce(output.loss.detach().float(), "mean").item()
                    logs["masked_accuracy"] = accelerator.reduce(output.masked_accuracy.float(), "mean").item()
                    logs["lr"] = lr_scheduler.get_last_lr()[0]
                    if ema is not None:
                        # The decay actually applied at this step: below --ema_decay during diffusers' warm-up.
                        logs["ema_decay"] = ema.cur_decay_value
                    logs["tokens_per_second"] = window_examples * tokens_per_example / max(elapsed, 1e-9)
                    accelerator.log(logs, step=global_step)
                    progress.set_postfix(loss=f"{logs['loss/total']:.3f}", tok_s=f"{logs['tokens_per_second']:.0f}")
                    window_start, window_examples = time.perf_counter(), 0

                if global_step % args.checkpointing_steps == 0:
                    checkpoints.save(global_step)
                if args.validation_steps and global_step % args.validation_steps == 0 and accelerator.is_main_process:
                    log_validation(accelerator, unwrapped, vqvae, id2label, args, global_step)
                if time_budget_spent(accelerator, run_start, args.max_train_seconds):
                    accelerator.print(f"--max_train_seconds {args.max_train_seconds} reached at step {global_step}")
                    max_train_steps = global_step
                    break
                if guard.should_stop(accelerator):
                    stopped_by_signal = True
                    break
                if global_step >= max_train_steps:
                    break
            epoch, skip_batches = epoch + 1, 0

    progress.close()
    if global_step > start_step:
        final_checkpoint = checkpoints.finish(global_step)
    if stopped_by_signal:
        exit_after_signal(accelerator, guard, final_checkpoint, global_step)
    accelerator.wait_for_everyone()
    if accelerator.distributed_type == DistributedType.FSDP:
        # The parameters are shards: every process takes part in gathering the full weights.
        full_state = accelerator.get_state_dict(objective)
    if accelerator.is_main_process:
        transformer_to_save = unwrapped
        if accelerator.distributed_type == DistributedType.FSDP:
            transformer_to_save = MGNTTransformer(unwrapped.config)
            transformer_to_save.load_state_dict({name.removeprefix("transformer."): value
                                                 for name, value in full_state.items()})
        if ema is not None:
            transformer_to_save = MGNTTransformer(unwrapped.config)
            ema.copy_to(transformer_to_save.parameters())
        pipeline = make_pipeline(transformer_to_save.eval(), vqvae.cpu(), make_scheduler(args, transformer_to_save))
        pipeline.save_pretrained(args.output_dir)
        accelerator.print(f"saved the pipeline to {args.output_dir}")
        if args.push_to_hub:
            pipeline.push_to_hub(args.hub_model_id, token=args.hub_token, private=args.hub_private,
                                 commit_message=f"MGNT trained for {global_step} steps")
    end_training(accelerator)


if __name__ == "__main__":
    main()
