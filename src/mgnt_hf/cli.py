"""The `mgnt` command line.

    mgnt generate [PIPELINE] --labels all --num-images-per-label 4 --output grid.png
    mgnt evaluate [PIPELINE] --samples-per-class 100 --output-dir quality
    mgnt generate-video [PIPELINE] --labels all --output videos.gif
    mgnt generate-video [PIPELINE] --context-video clip.mp4 --context-frames 4 --output predicted.gif
    mgnt evaluate-video --pipeline PIPELINE --dataset data/moving-fashion-mnist --output-dir video-quality

Subcommands register themselves in `SUBCOMMANDS` (a name -> function that adds its parser); each parser sets
`handler`, a function of the parsed arguments that returns the exit status. Errors a user can fix
(`ValueError`, `OSError`) are printed as one line, without a traceback, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import sys
import time
from pathlib import Path

DEFAULT_PIPELINE_NAME = "mgnt-fashion-mnist"
DEFAULT_VIDEO_PIPELINE_NAME = "mgnt-moving-fashion-mnist"


def default_pipeline_candidates(name: str = DEFAULT_PIPELINE_NAME) -> list[Path]:
    """Where a shipped pipeline may be: the repo checkout's `pipelines/`, then package data."""
    checkout = Path(__file__).resolve().parents[2] / "pipelines" / name
    packaged = Path(str(importlib.resources.files("mgnt_hf"))) / "pipelines" / name
    return [checkout, packaged]


def resolve_pipeline(pipeline: str | None, default_name: str = DEFAULT_PIPELINE_NAME) -> str:
    """The folder or Hub repo id to load: the given one, or the first candidate of the shipped one that exists."""
    if pipeline is not None:
        return pipeline
    candidates = default_pipeline_candidates(default_name)
    for candidate in candidates:
        if (candidate / "model_index.json").is_file():
            return str(candidate)
    raise OSError(
        f"no PIPELINE given and the default pipeline '{default_name}' is not available (looked in "
        f"{', '.join(str(c) for c in candidates)}); pass a saved pipeline folder or a Hub repo id"
    )


def parse_labels(values: list[str], num_classes: int) -> list[int | str]:
    """`all` -> every class id; digits -> ints; anything else is a label name for the pipeline to resolve."""
    if [value.lower() for value in values] == ["all"]:
        return list(range(num_classes))
    return [int(value) if value.lstrip("-").isdigit() else value for value in values]


def parse_width_schedule(value: str | None):
    """A JSON list like `[[0.5,6],[1.0,6]]`, or a preset name (checked by the scheduler)."""
    if value is None or not value.lstrip().startswith("["):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"--width-schedule {value!r} is not valid JSON ({error}); give e.g. '[[0.5,6],[1.0,6]]' "
                         "or a preset name") from error


def labelled_grid(images, row_names: list[str], images_per_row: int, scale: int):
    """One row per label: the label's name, then its images (PIL images, upscaled `scale` x, nearest)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width, height = images[0].width * scale, images[0].height * scale
    text_width = max(int(measure.textlength(name, font=font)) for name in row_names) + 12
    padding = 2
    grid = Image.new("RGB", (text_width + images_per_row * (width + padding), len(row_names) * (height + padding)),
                     "white")
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(row_names):
        top = row * (height + padding)
        draw.text((6, top + height // 2), name, fill="black", font=font, anchor="lm")
        for column in range(images_per_row):
            image = images[row * images_per_row + column].convert("RGB").resize((width, height), Image.NEAREST)
            grid.paste(image, (text_width + column * (width + padding), top))
    return grid


def load_for_generation(pipeline_class, args: argparse.Namespace, default_name: str):
    """The pipeline on `--device` in `--dtype`, progress bars off, and its device."""
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipeline_class.from_pretrained(resolve_pipeline(args.pipeline, default_name))
    pipe.to(device, dtype=dtypes[args.dtype])
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


def seeded_generators(device, seed: int, count: int) -> list:
    """One generator per output, seeded `seed + i`, on the CUDA device or the CPU."""
    import torch

    generator_device = "cuda" if str(device).startswith("cuda") else "cpu"
    return [torch.Generator(generator_device).manual_seed(seed + i) for i in range(count)]


def generate(args: argparse.Namespace) -> int:
    import torch

    from .pipeline_mgnt import MGNTPipeline

    pipe, device = load_for_generation(MGNTPipeline, args, DEFAULT_PIPELINE_NAME)
    config = pipe.transformer.config
    labels = parse_labels(args.labels, config.num_classes)
    label_ids = pipe.get_label_ids(labels)
    num_images = len(label_ids) * args.num_images_per_label
    generators = seeded_generators(device, args.seed, num_images)

    start = time.perf_counter()
    output = pipe(label_ids, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generators,
                  use_cache=False if args.no_cache else None, width_schedule=parse_width_schedule(args.width_schedule),
                  num_images_per_prompt=args.num_images_per_label, output_type="pil")
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    id2label = config.id2label if len(config.id2label or {}) == config.num_classes else {}
    row_names = [f"{i}: {id2label[i]}" if i in id2label else str(i) for i in label_ids]
    scale = args.scale or max(1, 64 // output.images[0].height)
    grid = labelled_grid(output.images, row_names, args.num_images_per_label, scale)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output)
    print(f"wrote {args.output}: {len(label_ids)} labels x {args.num_images_per_label} images")
    print(f"widths per step: {output.widths}")
    print(f"GFLOPs/image (transformer, both guidance branches): {output.gflops_per_image:.4f}")
    print(f"seconds/image ({device}, {args.dtype}, incl. tokenizer decode): {seconds / num_images:.4f}")
    return 0


def add_generate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate a labelled grid of images",
        description="Generate images with an MGNTPipeline and write a grid PNG (one row per label).")
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved pipeline folder or Hub repo id (default: the shipped {DEFAULT_PIPELINE_NAME})")
    parser.add_argument("--labels", nargs="+", default=["all"],
                        help="class ids and/or names (quote names with spaces), or 'all' (default)")
    parser.add_argument("--num-images-per-label", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default: the width schedule's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale; 1 = off (default: scheduler's)")
    parser.add_argument("--seed", type=int, default=0, help="image i uses a generator seeded seed + i")
    parser.add_argument("--no-cache", action="store_true", help="full pass at every step (exactly MaskGIT)")
    parser.add_argument("--width-schedule", default=None,
                        help="JSON like '[[0.5,6],[1.0,6]]' or a preset name (maskgit, magnets, ...)")
    parser.add_argument("--output", default="grid.png", help="PNG to write")
    parser.add_argument("--scale", type=int, default=None, help="integer upscaling of each image (default: to 64 px)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.set_defaults(handler=generate)


def evaluate(args: argparse.Namespace) -> int:
    try:
        return run_evaluate(args)
    except ImportError as error:  # an optional extra (matplotlib, torch-fidelity) is missing: say which
        print(f"mgnt evaluate: error: {error}", file=sys.stderr)
        return 2


def run_evaluate(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    from . import quality
    from .evaluation import MGNTFeatureClassifier, default_cache_dir, load_reference_images
    from .pipeline_mgnt import MGNTPipeline

    if args.samples_per_class < 1:
        raise ValueError(f"--samples-per-class must be a positive integer, got {args.samples_per_class}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:  # fail before hours of sampling
        raise ImportError("the quality plot needs matplotlib: pip install matplotlib (or mgnt_hf[plot]), "
                          "or pass --no-plot")
    pipe = MGNTPipeline.from_pretrained(resolve_pipeline(args.pipeline))
    classifier = MGNTFeatureClassifier.from_pretrained(quality.resolve_classifier(args.classifier))
    rows = None if args.rows is None else [quality.parse_row(name, pipe, args.steps) for name in args.rows]
    reference, reference_labels = (None, None) if args.reference_images is None \
        else load_reference_images(args.reference_images)
    output_dir = Path(args.output_dir)
    results = quality.evaluate_pipeline(
        pipe, classifier, rows=rows, samples_per_class=args.samples_per_class, num_inference_steps=args.steps,
        guidance_scale=args.guidance, batch_size=args.batch_size, seed=args.seed, device=args.device,
        reference=reference, reference_labels=reference_labels,
        cache_dir=args.cache_dir or default_cache_dir(), inception_weights=args.inception_weights,
        sample_grid_dir=output_dir / "samples", grid_images_per_class=args.grid_images_per_class,
    )
    paths = quality.write_results(results, output_dir, plot=not args.no_plot)
    print(quality.format_results_table(results))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


def add_evaluate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="sample quality (classifier FID, class accuracy) against GFLOPs per width schedule",
        description="Sample the pipeline under several width schedules with the same seeds and report, per row, "
                    "classifier FID against the real Fashion-MNIST test split, class accuracy, GFLOPs and seconds "
                    "per image, plus the tokenizer's reconstruction quality. Writes results.md, results.json, "
                    "quality_vs_gflops.png and samples/<row>.png to --output-dir.")
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved pipeline folder or Hub repo id (default: the shipped {DEFAULT_PIPELINE_NAME})")
    parser.add_argument("--samples-per-class", type=int, default=100, help="samples per class and row (default 100)")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps of every row (default: scheduler's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale; 1 = off (default: scheduler's)")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="rows to evaluate (default: maskgit, width-<w> for each smaller nested width, default, "
                             "default+cache, reverse+cache); names: maskgit, default, reverse, width-<w>, a preset "
                             "name, each optionally with +cache")
    parser.add_argument("--classifier", default=None,
                        help="feature classifier folder (default: the shipped fashion-mnist-classifier)")
    parser.add_argument("--reference-images", default=None,
                        help=".npz with 'pixels' float [N, C, H, W] in [-1, 1] and optional 'labels' [N] "
                             "(default: the Fashion-MNIST test split)")
    parser.add_argument("--cache-dir", default=None,
                        help="where reference feature statistics are cached (default: ~/.cache/mgnt_hf)")
    parser.add_argument("--inception-weights", default=None,
                        help="torch-fidelity Inception weights file: also report Inception FID (needs torch-fidelity)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per pipeline call (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="image j uses a generator seeded seed + j in every row")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--grid-images-per-class", type=int, default=8,
                        help="samples per class in each row's grid PNG; 0 = no grids (default 8)")
    parser.add_argument("--no-plot", action="store_true", help="skip quality_vs_gflops.png (no matplotlib needed)")
    parser.add_argument("--output-dir", default="quality", help="folder for the results (default: ./quality)")
    parser.set_defaults(handler=evaluate)


def tile_videos(videos, columns: int, padding: int = 2):
    """uint8 `[B, T, H, W, C]` -> `[T, rows * (H + padding), columns * (W + padding), C]`: every frame of the
    result shows frame t of each video, videos left to right then top to bottom (white gaps)."""
    import numpy as np

    count, frames, height, width, channels = videos.shape
    rows = -(-count // columns)
    tiled = np.full((frames, rows * (height + padding), columns * (width + padding), channels), 255, dtype=np.uint8)
    for index, video in enumerate(videos):
        top, left = (index // columns) * (height + padding), (index % columns) * (width + padding)
        tiled[:, top:top + height, left:left + width] = video
    return tiled


def generate_video(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .pipeline_mgnt_video import MGNTVideoPipeline
    from .video_io import decode_video
    from .video_utils import write_video

    if args.videos_per_label < 1:
        raise ValueError(f"--videos-per-label must be a positive integer, got {args.videos_per_label}")
    pipe, device = load_for_generation(MGNTVideoPipeline, args, DEFAULT_VIDEO_PIPELINE_NAME)
    config = pipe.transformer.config
    context = None
    if args.context_video is not None:
        if args.context_frames is None:
            raise ValueError("--context-video needs --context-frames (how many of its first frames to keep)")
        video = decode_video(args.context_video)  # uint8 [T, H, W, C]
        if video.shape[0] < args.context_frames:
            raise ValueError(f"--context-video {args.context_video} has {video.shape[0]} frames, fewer than "
                             f"--context-frames {args.context_frames}")
        context = video[None, :args.context_frames].astype(np.float32) / 255.0  # [1, Tc, H, W, C]
        label_ids = None if args.labels == ["none"] else pipe.get_label_ids(parse_labels(args.labels, config.num_classes))
    elif args.context_frames is not None:
        raise ValueError("--context-frames needs --context-video")
    else:
        label_ids = pipe.get_label_ids(parse_labels(args.labels, config.num_classes))
    num_videos = (1 if label_ids is None else len(label_ids)) * args.videos_per_label
    generators = seeded_generators(device, args.seed, num_videos)

    start = time.perf_counter()
    output = pipe(label_ids, context_frames=context, num_inference_steps=args.steps, guidance_scale=args.guidance,
                  generator=generators, use_cache=False if args.no_cache else None,
                  width_schedule=parse_width_schedule(args.width_schedule),
                  num_videos_per_prompt=args.videos_per_label, output_type="np")
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    videos = (output.frames * 255).round().astype(np.uint8)  # [B, T, H, W, C]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_video(tile_videos(videos, columns=args.videos_per_label if label_ids is not None and len(label_ids) > 1
                            else min(num_videos, 8)), args.output, fps=args.fps)
    print(f"wrote {args.output}: {num_videos} videos of {videos.shape[1]} frames"
          + (f" ({output.num_context_frames} given)" if context is not None else "")
          + ("" if label_ids is None or len(label_ids) == 1 else ", one row per label"))
    print(f"widths per step: {output.widths}")
    print(f"GFLOPs/video (transformer, both guidance branches): {output.gflops_per_video:.4f}")
    print(f"seconds/video ({device}, {args.dtype}, incl. tokenizer): {seconds / num_videos:.4f}")
    return 0


def add_generate_video_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate-video", help="generate videos of classes, or predict a video's continuation",
        description="Generate videos with an MGNTVideoPipeline (one row per label) or, with --context-video, predict "
                    "the frames that follow its first --context-frames frames; writes a GIF or a video file whose "
                    "frames tile all the videos.")
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved video pipeline folder or Hub repo id (default: the shipped "
                             f"{DEFAULT_VIDEO_PIPELINE_NAME})")
    parser.add_argument("--labels", nargs="+", default=["all"],
                        help="class ids and/or names, or 'all' (default); with --context-video one label or 'none'")
    parser.add_argument("--videos-per-label", type=int, default=1)
    parser.add_argument("--context-video", default=None, help="video file or frame folder to continue")
    parser.add_argument("--context-frames", type=int, default=None, help="frames of --context-video to keep")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default: the width schedule's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale; 1 = off (default: scheduler's)")
    parser.add_argument("--seed", type=int, default=0, help="video i uses a generator seeded seed + i")
    parser.add_argument("--no-cache", action="store_true", help="full pass at every step (exactly MaskGIT)")
    parser.add_argument("--width-schedule", default=None,
                        help="JSON like '[[0.5,6],[1.0,6]]' or a preset name (maskgit, magnets, ...)")
    parser.add_argument("--output", default="videos.gif", help=".gif, .mp4, .webm, .mkv or .avi to write")
    parser.add_argument("--fps", type=float, default=8)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.set_defaults(handler=generate_video)


def add_evaluate_video_parser(subparsers) -> None:
    from .video_quality import add_video_evaluate_arguments, run_video_evaluate

    parser = subparsers.add_parser(
        "evaluate-video", help="video quality (per-frame classifier FID, accuracy, temporal consistency, "
                               "PSNR/SSIM of frame prediction, optional FVD) against GFLOPs per width schedule")
    add_video_evaluate_arguments(parser)
    parser.set_defaults(handler=run_video_evaluate)


SUBCOMMANDS = {"generate": add_generate_parser, "evaluate": add_evaluate_parser,
               "generate-video": add_generate_video_parser, "evaluate-video": add_evaluate_video_parser}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgnt", description="MaGNeTS (mgnt_hf) command line")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS.values():
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, OSError) as error:
        print(f"mgnt {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
