"""The `mgnt` command line, and the only home of argparse in mgnt_hf.

    mgnt generate [PIPELINE] --labels all --num-images-per-label 4 --output grid.png
    mgnt evaluate [PIPELINE] --samples-per-class 100 --output-dir quality
    mgnt evaluate [PIPELINE] --frontier --output-dir frontier
    mgnt search-schedule [PIPELINE] --budgets 4x 2x --write
    mgnt inpaint [PIPELINE] --image in.png --mask mask.png --labels dress trouser --output out.png
    mgnt extract [PIPELINE] --width 128 --output pipelines/mgnt-fashion-mnist-128
    mgnt generate-video [PIPELINE] --labels all --output videos.gif
    mgnt generate-video [PIPELINE] --context-video clip.mp4 --context-frames 4 --output predicted.gif
    mgnt evaluate-video --pipeline PIPELINE --dataset data/moving-fashion-mnist --output-dir video-quality
    mgnt evaluate-tokenizer TOKENIZER_OR_PIPELINE --output tokenizer.json

Each command is a [`Command`] in `COMMANDS`: its help, its description, a function that adds its options to a
parser and a handler (the parsed arguments -> exit status). `benchmarks/quality.py` and
`benchmarks/video_quality.py` run a command as a script (`main([command, *argv], prog=...)`). Errors a user can
fix (`ValueError`, `OSError`, and `ImportError` for a missing optional package) are printed as one line, without
a traceback, with exit status 2; arguments are checked before anything is loaded where they can be.

This module imports only the standard library at the top, and a command's options are added only when that command
is run: `mgnt --help` answers without importing torch. Each handler imports what it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .resources import DEFAULT_CLASSIFIER, DEFAULT_FRAME_CLASSIFIER, DEFAULT_PIPELINE, DEFAULT_VIDEO_PIPELINE, shipped
from .utils.checks import check_finite_number, check_positive_int, check_seed
from .width_schedule_presets import DEFAULT_WIDTH_SCHEDULE, WIDTH_SCHEDULE_PRESETS

ROW_NAMES_HELP = ("rows to evaluate (default: maskgit, width-<w> for each smaller nested width, default, "
                  "default+cache, reverse+cache); names: maskgit, default, reverse, width-<w>, a preset name, each "
                  "optionally with -<T> (its own step count, e.g. maskgit-4, the frontier's names) and +cache")


# ---------------------------------------------------------------------------------------------
# Shared by the commands
# ---------------------------------------------------------------------------------------------


def resolve_pipeline(pipeline: str | None, default_name: str = DEFAULT_PIPELINE) -> str:
    """The folder or Hub repo id to load: the given one, or the shipped pipeline `default_name`."""
    if pipeline is not None:
        return pipeline
    try:
        return str(shipped(default_name))
    except OSError as error:
        raise OSError(f"no PIPELINE given and the default pipeline '{default_name}' is not available ({error}); "
                      "pass a saved pipeline folder or a Hub repo id") from error


def shipped_class_names(name: str) -> list[str]:
    """The class names of the shipped pipeline `name` (read from its transformer config; empty when it is not
    shipped or has only placeholder names): what `--labels` help lists."""
    try:
        config = json.loads((shipped(name) / "transformer" / "config.json").read_text())
    except (OSError, ValueError):
        return []
    names = [config["id2label"][key] for key in sorted(config.get("id2label") or {}, key=int)]
    return [] if all(label.startswith("LABEL_") for label in names) else names


def class_names_help(default_name: str) -> str:
    """"; the shipped <name>'s: 0=..., 1=..." for a `--labels` help (empty where the pipeline is not shipped)."""
    names = shipped_class_names(default_name)
    return f"; the shipped {default_name}'s: " + ", ".join(f"{i}={label}" for i, label in enumerate(names)) \
        if names else ""


def labels_help(default_name: str, default: str) -> str:
    return (f"class ids and/or names (case-insensitive, quote names with spaces), or 'all' (default: {default})"
            + class_names_help(default_name))


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


def set_threads(args: argparse.Namespace) -> None:
    """`torch.set_num_threads(--threads)` when given."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(check_positive_int("--threads", args.threads))


def resolve_device_argument(args: argparse.Namespace):
    """`--device` as a `torch.device` this machine has (default: cuda if available), before anything loads."""
    from .utils.hardware import resolve_device

    return resolve_device(args.device, "--device")


@contextlib.contextmanager
def quiet_loading():
    """No progress bars from transformers ("Loading weights", per model) or diffusers ("Loading pipeline
    components") while a command runs: loading takes seconds, and the command shows its own bar where it has one."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled[0]:
            diffusers_logging.enable_progress_bar()
        if enabled[1]:
            transformers_logging.enable_progress_bar()


def load_for_generation(pipeline_class, args: argparse.Namespace, device, default_name: str):
    """The pipeline on `device` in `--dtype`, its per-step progress bars off."""
    import torch

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    pipe = pipeline_class.from_pretrained(resolve_pipeline(args.pipeline, default_name))
    pipe.to(device, dtype=dtypes[args.dtype])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def width_schedule_help() -> str:
    presets = "; ".join(f"{name} = {json.dumps(segments)}" for name, segments in WIDTH_SCHEDULE_PRESETS.items())
    return (f"[[width_fraction, steps], ...] as JSON, e.g. '[[0.5,6],[1.0,6]]', or a preset: {presets} (default: the "
            f"saved scheduler's, {DEFAULT_WIDTH_SCHEDULE} unless the pipeline stores another)")


def add_decoding_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """The decoding options `generate` and `generate-video` share (`kind`: "image" or "video")."""
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default: the width schedule's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale; 1 = off (default: the scheduler's)")
    parser.add_argument("--seed", type=int, default=0, help=f"{kind} i uses a generator seeded seed + i")
    parser.add_argument("--no-cache", action="store_true", help="full pass at every step (exactly MaskGIT)")
    parser.add_argument("--width-schedule", default=None, help=width_schedule_help())


def add_device_arguments(parser: argparse.ArgumentParser, dtype: bool = False, threads: bool = False) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)")
    if dtype:
        parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                            help="weights and compute dtype")
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """The classifier and real images samples are scored against (`evaluate`, `search-schedule`)."""
    parser.add_argument("--classifier", default=None,
                        help=f"feature classifier folder (default: the shipped {DEFAULT_CLASSIFIER})")
    parser.add_argument("--reference-images", default=None,
                        help=".npz with 'pixels' float [N, C, H, W] in [-1, 1] and optional 'labels' [N] "
                             "(default: the Fashion-MNIST test split)")
    parser.add_argument("--cache-dir", default=None,
                        help="where reference feature statistics and the tokenizer's reconstruction scores are cached "
                             "(default: ~/.cache/mgnt_hf)")


def check_image_output(path: str, name: str = "--output") -> None:
    """`ValueError` unless `path` ends in an image extension PIL can write (checked before any work)."""
    from PIL import Image

    extension = Path(path).suffix.lower()
    if Image.registered_extensions().get(extension) not in Image.SAVE:
        raise ValueError(f"{name} {path!r} needs an image file extension PIL writes, e.g. .png, .jpg or .webp; "
                         f"got {extension or 'none'}")


def check_grid_fits(row_names: list[str], images_per_row: int, image_size: tuple[int, int]) -> None:
    """`ValueError` when the grid PNG would exceed `PIL.Image.MAX_IMAGE_PIXELS`, the size PIL (and so most viewers
    built on it) refuses to open: say how many images per row fit instead."""
    from PIL import Image

    from .visualization import labelled_grid_size

    limit = Image.MAX_IMAGE_PIXELS
    width, height = labelled_grid_size(row_names, images_per_row, image_size)
    if limit is None or width * height <= limit:
        return
    name_width = labelled_grid_size(row_names, 0, image_size)[0]
    fitting = max(0, (limit // height - name_width) // (image_size[0] + 2))
    raise ValueError(f"--num-images-per-label {images_per_row} with {len(row_names)} labels makes a {width} x {height} "
                     f"grid ({width * height:,} pixels), more than PIL opens (PIL.Image.MAX_IMAGE_PIXELS = {limit:,}); "
                     f"allowed: at most {fitting} images per label here (fewer labels or a smaller --scale allow more)")


# ---------------------------------------------------------------------------------------------
# mgnt generate
# ---------------------------------------------------------------------------------------------


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved pipeline folder or Hub repo id (default: the shipped {DEFAULT_PIPELINE})")
    parser.add_argument("--labels", nargs="+", default=["all"], help=labels_help(DEFAULT_PIPELINE, "all"))
    parser.add_argument("--num-images-per-label", type=int, default=4, help="images per label: one grid row each")
    add_decoding_arguments(parser, "image")
    parser.add_argument("--output", default="grid.png", help="image file to write (.png, .jpg, .webp, ...)")
    parser.add_argument("--scale", type=int, default=None,
                        help="integer upscaling of each image (default: the factor that brings it to about 64 px)")
    add_device_arguments(parser, dtype=True)


def generate(args: argparse.Namespace) -> int:
    check_positive_int("--num-images-per-label", args.num_images_per_label)
    check_positive_int("--scale", args.scale, allow_none=True)
    check_seed("--seed", args.seed)
    check_image_output(args.output)
    device = resolve_device_argument(args)

    from .evaluation import seeded_generators, synchronize
    from .pipeline_mgnt import MGNTPipeline
    from .visualization import labelled_grid

    pipe = load_for_generation(MGNTPipeline, args, device, DEFAULT_PIPELINE)
    if pipe.vqvae is None:
        raise ValueError("mgnt generate writes images, and this pipeline has no vqvae to decode them")
    config = pipe.transformer.config
    labels = parse_labels(args.labels, config.num_classes)
    label_ids = pipe.get_label_ids(labels)
    num_images = len(label_ids) * args.num_images_per_label
    check_seed("--seed", args.seed, num_images)
    id2label = config.id2label if len(config.id2label or {}) == config.num_classes else {}
    row_names = [f"{i}: {id2label[i]}" if i in id2label else str(i) for i in label_ids]
    height, width = pipe.vqvae.config.resolution
    scale = args.scale or max(1, 64 // height)
    check_grid_fits(row_names, args.num_images_per_label, (width * scale, height * scale))
    generators = seeded_generators(device, args.seed, num_images)

    start = time.perf_counter()
    output = pipe(label_ids, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generators,
                  use_cache=False if args.no_cache else None, width_schedule=parse_width_schedule(args.width_schedule),
                  num_images_per_prompt=args.num_images_per_label, output_type="pil")
    synchronize(device)
    seconds = time.perf_counter() - start

    grid = labelled_grid(output.images, row_names, args.num_images_per_label, scale)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output)
    print(f"wrote {args.output}: {len(label_ids)} labels x {args.num_images_per_label} images")
    print(f"widths per step: {output.widths}")
    print(f"GFLOPs/image (transformer, both guidance branches): {output.gflops_per_image:.4f}")
    print(f"seconds/image ({device}, {args.dtype}, incl. tokenizer decode): {seconds / num_images:.4f}")
    return 0


# ---------------------------------------------------------------------------------------------
# mgnt evaluate
# ---------------------------------------------------------------------------------------------


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved pipeline folder or Hub repo id (default: the shipped {DEFAULT_PIPELINE})")
    parser.add_argument("--samples-per-class", type=int, default=100, help="samples per class and row")
    parser.add_argument("--steps", type=int, default=None,
                        help="decoding steps of every row (default: the scheduler's)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale; 1 = off (default: the scheduler's)")
    parser.add_argument("--rows", nargs="+", default=None, help=ROW_NAMES_HELP)
    add_scoring_arguments(parser)
    parser.add_argument("--inception-weights", default=None,
                        help="torch-fidelity Inception weights file: also report Inception FID (needs torch-fidelity; "
                             "default: none, no Inception FID)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per pipeline call")
    parser.add_argument("--seed", type=int, default=0, help="image j uses a generator seeded seed + j in every row")
    add_device_arguments(parser, threads=True)
    parser.add_argument("--grid-images-per-class", type=int, default=8,
                        help="samples per class in each row's grid PNG; 0 = no grids")
    parser.add_argument("--no-plot", action="store_true", help="skip quality_vs_gflops.png (no matplotlib needed)")
    parser.add_argument("--frontier", action="store_true",
                        help="evaluate the compute frontier instead of --rows: MaskGIT at 2-12 steps (cache off and "
                             "on), each smaller width alone at 4/8/12 steps, MaGNeTS schedules at 6/8/12/16 steps; "
                             "writes frontier.md, frontier.json, frontier.png with the Pareto front")
    parser.add_argument("--output-dir", default="quality", help="folder for the results")


def evaluate(args: argparse.Namespace) -> int:
    """Load the pipeline, the classifier and the reference images named by `args`; evaluate, write, print."""
    check_positive_int("--samples-per-class", args.samples_per_class)
    check_seed("--seed", args.seed)
    set_threads(args)
    device = resolve_device_argument(args)
    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:  # fail before hours of sampling
        raise ImportError("the quality plot needs matplotlib: pip install matplotlib (or mgnt_hf[plot]), "
                          "or pass --no-plot")
    if args.frontier and (args.rows is not None or args.steps is not None):
        raise ValueError("--frontier chooses its own rows and step counts; drop --rows and --steps")

    from .evaluation import (
        default_cache_dir,
        evaluate_pipeline,
        format_results_table,
        load_classifier,
        load_reference_images,
        parse_row,
        write_results,
    )
    from .evaluation.frontier import evaluate_frontier, format_frontier_table, frontier_rows, write_frontier
    from .pipeline_mgnt import MGNTPipeline

    pipe = MGNTPipeline.from_pretrained(resolve_pipeline(args.pipeline))
    classifier = load_classifier(args.classifier, DEFAULT_CLASSIFIER)
    if args.frontier:
        rows = frontier_rows(pipe)
    else:
        rows = None if args.rows is None else [parse_row(name, pipe, args.steps) for name in args.rows]
    reference, reference_labels = (None, None) if args.reference_images is None \
        else load_reference_images(args.reference_images)
    output_dir = Path(args.output_dir)
    settings = dict(
        samples_per_class=args.samples_per_class, num_inference_steps=args.steps, guidance_scale=args.guidance,
        batch_size=args.batch_size, seed=args.seed, device=device, reference=reference,
        reference_labels=reference_labels, cache_dir=args.cache_dir or default_cache_dir(),
        inception_weights=args.inception_weights, sample_grid_dir=output_dir / "samples",
        grid_images_per_class=args.grid_images_per_class,
    )
    if args.frontier:
        results = evaluate_frontier(pipe, classifier, rows=rows, **settings)
        paths = write_frontier(results, output_dir, plot=not args.no_plot)
        print(format_frontier_table(results))
    else:
        results = evaluate_pipeline(pipe, classifier, rows=rows, **settings)
        paths = write_results(results, output_dir, plot=not args.no_plot)
        print(format_results_table(results))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


# ---------------------------------------------------------------------------------------------
# mgnt search-schedule
# ---------------------------------------------------------------------------------------------


def add_search_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved pipeline folder (default: the shipped {DEFAULT_PIPELINE})")
    parser.add_argument("--budgets", nargs="+", required=True,
                        help="GFLOPs/image budgets: numbers, or 'Nx' for N times fewer than 12-step MaskGIT "
                             "without cache, the baseline (e.g. 4x)")
    parser.add_argument("--search-samples-per-class", type=int, default=20,
                        help="samples per class scoring every candidate, on the search seeds")
    parser.add_argument("--confirm-samples-per-class", type=int, default=50,
                        help="samples per class re-scoring the finalists, on disjoint seeds")
    parser.add_argument("--finalists", type=int, default=3, help="candidates per budget confirmed")
    parser.add_argument("--max-candidates", type=int, default=24, help="candidates per budget scored")
    parser.add_argument("--min-budget-use", type=float, default=0.5,
                        help="candidates use at least this fraction of their budget")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the scheduler's)")
    add_scoring_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=100, help="images per pipeline call")
    add_device_arguments(parser, threads=True)
    parser.add_argument("--write", action="store_true",
                        help="store the table as budget_schedules in PIPELINE's scheduler config")
    parser.add_argument("--set-default", default=None, metavar="BUDGET",
                        help="with --write: also make the winner of this budget (one of --budgets) the scheduler's "
                             "default width schedule and cache setting")
    parser.add_argument("--output-dir", default="schedule-search", help="where search.json goes")


def parse_budget(value: str, maskgit_gflops: float) -> float:
    """A budget as typed: GFLOPs/image, or `Nx` (N times fewer than `maskgit_gflops`)."""
    try:
        number = float(value[:-1]) if value.endswith("x") else float(value)
    except ValueError:
        raise ValueError(f"budget {value!r} must be a number of GFLOPs/image or 'Nx' (e.g. 4x)") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"budget {value!r} must be positive and finite")
    return maskgit_gflops / number if value.endswith("x") else number


def search_schedule(args: argparse.Namespace) -> int:
    """Search the best schedule per budget; print and save the table; with --write store it in the pipeline."""
    set_threads(args)
    device = resolve_device_argument(args)
    if args.set_default is not None and not args.write:
        raise ValueError("--set-default changes the saved pipeline: pass --write too")
    if args.set_default is not None and args.set_default not in args.budgets:
        raise ValueError(f"--set-default {args.set_default!r} must be one of --budgets {args.budgets}")
    folder = resolve_pipeline(args.pipeline)
    if args.write and not Path(folder, "scheduler", "scheduler_config.json").is_file():
        raise OSError(f"--write needs a local saved pipeline folder; {folder!r} has no scheduler/scheduler_config.json")

    from .evaluation import BASELINE_STEPS, default_cache_dir, load_classifier, load_reference_images
    from .evaluation.schedule_search import search_schedules, write_budget_schedules
    from .pipeline_mgnt import MGNTPipeline

    pipe = MGNTPipeline.from_pretrained(folder)
    # Against the fixed baseline, not the default schedule's step count: --set-default may change that.
    maskgit = pipe.planned_gflops_per_image(BASELINE_STEPS, [[1.0, BASELINE_STEPS]], use_cache=False,
                                            guidance_scale=args.guidance)
    budgets = {value: parse_budget(value, maskgit) for value in args.budgets}
    reference, reference_labels = (None, None) if args.reference_images is None \
        else load_reference_images(args.reference_images)
    found = search_schedules(
        pipe, load_classifier(args.classifier, DEFAULT_CLASSIFIER), list(budgets.values()),
        search_samples_per_class=args.search_samples_per_class,
        confirm_samples_per_class=args.confirm_samples_per_class, finalists_per_budget=args.finalists,
        min_budget_use=args.min_budget_use, max_candidates_per_budget=args.max_candidates,
        guidance_scale=args.guidance, batch_size=args.batch_size, device=device, reference=reference,
        reference_labels=reference_labels, cache_dir=args.cache_dir or default_cache_dir())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "search.json").write_text(json.dumps({**found, "maskgit_gflops_per_image": maskgit}, indent=2) + "\n")
    print("| budget GFLOPs | winner | steps | cache | GFLOPs | cFID | acc % |\n|---:|---|---:|---|---:|---:|---:|")
    for entry in found["budget_schedules"]:
        schedule = " ".join(f"{fraction:g}x{count}" for fraction, count in entry["width_schedule"])
        print(f"| {entry['max_gflops_per_image']:.3f} | {schedule} | {entry['num_inference_steps']} | "
              f"{'yes' if entry['use_cache'] else 'no'} | {entry['gflops_per_image']:.3f} | "
              f"{entry['classifier_fid']:.3f} | {100 * entry['class_accuracy']:.1f} |")
    if args.write:
        write_budget_schedules(folder, found["budget_schedules"])
        if args.set_default is not None:
            chosen = next(entry for entry in found["budget_schedules"]
                          if entry["max_gflops_per_image"] == budgets[args.set_default])
            set_default_schedule(folder, chosen)
        print(f"stored budget_schedules in {folder}/scheduler/scheduler_config.json")
    print(f"wrote {output_dir / 'search.json'}")
    return 0


def set_default_schedule(folder: str, entry: dict) -> None:
    """Make `entry`'s width schedule (at its step count) and cache setting the saved scheduler's defaults."""
    from .scheduling_mgnt import MGNTScheduler, rescale_width_schedule

    scheduler = MGNTScheduler.from_pretrained(Path(folder) / "scheduler")
    scheduler = MGNTScheduler.from_config(scheduler.config, width_schedule=rescale_width_schedule(
        entry["width_schedule"], entry["num_inference_steps"]), use_cache=entry["use_cache"])
    scheduler.save_pretrained(Path(folder) / "scheduler")


# ---------------------------------------------------------------------------------------------
# mgnt generate-video
# ---------------------------------------------------------------------------------------------


def add_generate_video_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved video pipeline folder or Hub repo id (default: the shipped "
                             f"{DEFAULT_VIDEO_PIPELINE})")
    parser.add_argument("--labels", nargs="+", default=None,
                        help=labels_help(DEFAULT_VIDEO_PIPELINE, "all; with --context-video none, i.e. "
                                         "unconditional prediction") + ". With --context-video: one label, or 'none'")
    parser.add_argument("--videos-per-label", type=int, default=1,
                        help="videos per label (or per context video): one row of the output each")
    parser.add_argument("--context-video", default=None,
                        help="video file or frame folder whose first --context-frames frames are continued; RGB is "
                             "converted to the tokenizer's channels (default: none, generate from --labels)")
    parser.add_argument("--context-frames", type=int, default=None,
                        help="frames of --context-video to keep (default: none; required with --context-video)")
    add_decoding_arguments(parser, "video")
    parser.add_argument("--output", default="videos.gif",
                        help=".gif, .mp4, .webm, .mkv or .avi to write (all but .gif need PyAV)")
    parser.add_argument("--fps", type=float, default=8, help="frames per second of --output")
    add_device_arguments(parser, dtype=True)


def check_video_arguments(args: argparse.Namespace) -> None:
    """What `generate-video` can check before loading: counts, seed, the output's format, PyAV where a file needs
    it, and that --context-video and --context-frames come together."""
    from .video_utils import WRITE_EXTENSIONS, import_av

    check_positive_int("--videos-per-label", args.videos_per_label)
    check_positive_int("--context-frames", args.context_frames, allow_none=True)
    check_seed("--seed", args.seed)
    check_finite_number("--fps", args.fps, minimum=0, exclusive_minimum=True)
    extension = Path(args.output).suffix.lower()
    if extension not in WRITE_EXTENSIONS:
        raise ValueError(f"--output {args.output!r} must end in one of {', '.join(WRITE_EXTENSIONS)}; got "
                         f"{extension or 'no extension'}")
    if (args.context_video is None) != (args.context_frames is None):
        raise ValueError("--context-frames needs --context-video" if args.context_video is None else
                         "--context-video needs --context-frames (how many of its first frames to keep)")
    if args.context_video is not None and not Path(args.context_video).exists():
        raise OSError(f"--context-video {args.context_video} does not exist")
    if extension != ".gif" or (args.context_video is not None and Path(args.context_video).is_file()):
        import_av()  # `ImportError` naming the extra now, not after the pipeline has loaded and sampled


def context_and_labels(pipe, args: argparse.Namespace):
    """The context frames `[1, Tc, H, W, C]` in [0, 1] of `--context-video` (None without it), converted to the
    tokenizer's channels, and the label ids (None: unconditional prediction, the default with a context video)."""
    import numpy as np

    from .video_io import decode_video
    from .video_utils import to_channels

    num_classes = pipe.transformer.config.num_classes
    if args.context_video is None:
        return None, pipe.get_label_ids(parse_labels(args.labels or ["all"], num_classes))
    video = decode_video(args.context_video)  # uint8 [T, H, W, C]
    if video.shape[0] < args.context_frames:
        raise ValueError(f"--context-video {args.context_video} has {video.shape[0]} frames, fewer than "
                         f"--context-frames {args.context_frames}")
    channels = pipe.vqvae.config.num_channels
    if video.shape[-1] != channels:
        print(f"--context-video has {video.shape[-1]} channels; converted to the tokenizer's {channels} "
              f"({'gray' if channels == 1 else 'RGB'})")
        video = to_channels(video, channels)
    context = video[None, :args.context_frames].astype(np.float32) / 255.0  # [1, Tc, H, W, C]
    unconditional = args.labels is None or [label.lower() for label in args.labels] == ["none"]
    label_ids = None if unconditional else pipe.get_label_ids(parse_labels(args.labels, num_classes))
    return context, label_ids


def generate_video(args: argparse.Namespace) -> int:
    check_video_arguments(args)
    device = resolve_device_argument(args)

    import numpy as np

    from .evaluation import seeded_generators, synchronize
    from .pipeline_mgnt_video import MGNTVideoPipeline
    from .video_utils import write_video
    from .visualization import tile_videos

    pipe = load_for_generation(MGNTVideoPipeline, args, device, DEFAULT_VIDEO_PIPELINE)
    context, label_ids = context_and_labels(pipe, args)
    num_videos = (1 if label_ids is None else len(label_ids)) * args.videos_per_label
    generators = seeded_generators(device, args.seed, num_videos)

    start = time.perf_counter()
    output = pipe(label_ids, context_frames=context, num_inference_steps=args.steps, guidance_scale=args.guidance,
                  generator=generators, use_cache=False if args.no_cache else None,
                  width_schedule=parse_width_schedule(args.width_schedule),
                  num_videos_per_prompt=args.videos_per_label, output_type="np")
    synchronize(device)
    seconds = time.perf_counter() - start
    videos = (output.frames * 255).round().astype(np.uint8)  # [B, T, H, W, C]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    # One video is written as it is (no tile border), so it can be the --context-video of another call.
    columns = args.videos_per_label if label_ids is not None and len(label_ids) > 1 else min(num_videos, 8)
    write_video(videos[0] if num_videos == 1 else tile_videos(videos, columns=columns), args.output, fps=args.fps)
    print(f"wrote {args.output}: {num_videos} videos of {videos.shape[1]} frames"
          + (f" ({output.num_context_frames} given)" if context is not None else "")
          + ("" if label_ids is None or len(label_ids) == 1 else ", one row per label"))
    print(f"widths per step: {output.widths}")
    print(f"GFLOPs/video (transformer, both guidance branches): {output.gflops_per_video:.4f}")
    print(f"seconds/video ({device}, {args.dtype}, incl. tokenizer): {seconds / num_videos:.4f}")
    return 0


# ---------------------------------------------------------------------------------------------
# mgnt evaluate-video
# ---------------------------------------------------------------------------------------------


def add_evaluate_video_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default=None,
                        help=f"saved MGNTVideoPipeline folder or Hub repo id (default: the shipped "
                             f"{DEFAULT_VIDEO_PIPELINE})")
    parser.add_argument("--classifier", default=None,
                        help=f"per-frame MGNTFeatureClassifier folder (default: the shipped {DEFAULT_FRAME_CLASSIFIER})")
    parser.add_argument("--dataset", default="data/moving-fashion-mnist",
                        help="real videos: a save_to_disk folder or datasets name (default: data/moving-fashion-mnist)")
    parser.add_argument("--split", default="test", help="split of --dataset (default: test)")
    parser.add_argument("--limit-real", type=int, default=None, help="use only the first N real videos (default: all)")
    parser.add_argument("--rows", nargs="+", default=None, help=ROW_NAMES_HELP)
    parser.add_argument("--videos-per-class", type=int, default=10,
                        help="generated videos per class and row; 0 skips generation (default 10)")
    parser.add_argument("--context-frames", type=int, default=4, help="given frames for prediction (default 4)")
    parser.add_argument("--num-prediction-videos", type=int, default=100,
                        help="real videos whose continuation is predicted; 0 skips prediction (default 100)")
    from .evaluation import PREDICTION_LABELS

    parser.add_argument("--prediction-labels", choices=PREDICTION_LABELS, default="given",
                        help="condition prediction on the real label (given, with guidance) or not (none)")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps of every row (default: scheduler's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale; 1 = off (default: scheduler's)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per pipeline call (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="video j uses a generator seeded seed + j in every row")
    parser.add_argument("--i3d-torchscript", default=None,
                        help="TorchScript I3D (StyleGAN-V's i3d_torchscript.pt convention): also report FVD "
                             "(default: none, no FVD)")
    parser.add_argument("--sample-videos", type=int, default=4,
                        help="videos per sample strip PNG (samples/<row>-<task>.png); 0 = none (default 4)")
    add_device_arguments(parser, threads=True)
    parser.add_argument("--output-dir", default="video-quality", help="folder for the results (default: ./video-quality)")


def evaluate_video(args: argparse.Namespace) -> int:
    """Load the pipeline, the classifier and the real videos named by `args`; evaluate, write, print."""
    check_seed("--seed", args.seed)
    set_threads(args)
    device = resolve_device_argument(args)

    from .evaluation import (
        evaluate_video_pipeline,
        format_video_results_table,
        load_classifier,
        load_video_arrays,
        write_video_results,
    )
    from .pipeline_mgnt_video import MGNTVideoPipeline

    pipe = MGNTVideoPipeline.from_pretrained(resolve_pipeline(args.pipeline, DEFAULT_VIDEO_PIPELINE))
    classifier = load_classifier(args.classifier, DEFAULT_FRAME_CLASSIFIER)
    videos, labels = load_video_arrays(args.dataset, args.split, limit=args.limit_real)
    num_frames = pipe.vqvae.config.num_frames
    if videos.shape[1] > num_frames:
        print(f"the real videos have {videos.shape[1]} frames; evaluating their first {num_frames} (the tokenizer's "
              f"clip length)")
        videos = videos[:, :num_frames]
    output_dir = Path(args.output_dir)
    results = evaluate_video_pipeline(
        pipe, classifier, videos, labels, rows=args.rows, videos_per_class=args.videos_per_class,
        num_inference_steps=args.steps, guidance_scale=args.guidance, batch_size=args.batch_size, seed=args.seed,
        context_frames=args.context_frames, num_prediction_videos=args.num_prediction_videos,
        prediction_labels=args.prediction_labels, device=device, i3d_torchscript=args.i3d_torchscript,
        sample_dir=output_dir / "samples", sample_videos=args.sample_videos,
    )
    results["settings"]["real_videos"] = {"dataset": args.dataset, "split": args.split, "limit": args.limit_real}
    paths = write_video_results(results, output_dir)
    print(format_video_results_table(results))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


# ---------------------------------------------------------------------------------------------
# mgnt evaluate-tokenizer
# ---------------------------------------------------------------------------------------------


def add_evaluate_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tokenizer",
                        help="MGNTVQModel folder (config.json + model.safetensors), a saved pipeline folder (its vqvae/ "
                             "is used) or a Hub repo id (with --subfolder)")
    parser.add_argument("--subfolder", default=None, help="subfolder of a Hub repo holding the tokenizer, e.g. vqvae (default: none; a local pipeline folder needs none)")
    parser.add_argument("--classifier", default=None,
                        help=f"feature classifier folder (default: the shipped {DEFAULT_FRAME_CLASSIFIER} for a "
                             f"video tokenizer, {DEFAULT_CLASSIFIER} for an image tokenizer)")
    parser.add_argument("--dataset", default="data/moving-fashion-mnist",
                        help="video tokenizers: real videos, a save_to_disk folder or datasets name "
                             "(default: data/moving-fashion-mnist)")
    parser.add_argument("--split", default="test", help="video tokenizers: split of --dataset (default: test)")
    parser.add_argument("--limit-real", type=int, default=None,
                        help="video tokenizers: use only the first N real videos (default: all)")
    parser.add_argument("--reference-images", default=None,
                        help="image tokenizers: .npz with 'pixels' float [N, C, H, W] in [-1, 1] and optional "
                             "'labels' [N] (default: the Fashion-MNIST test split)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos (or images) per tokenizer call")
    add_device_arguments(parser, threads=True)
    parser.add_argument("--output", default=None, help="also write the results to this JSON file (default: none)")


def load_tokenizer(path: str, subfolder: str | None):
    """The `MGNTVQModel` at `path`: a tokenizer folder, a pipeline folder (its `vqvae/`) or a Hub id."""
    from .modeling_vq import MGNTVQModel

    folder = Path(path)
    if subfolder is None and folder.is_dir() and not (folder / "config.json").is_file():
        if not (folder / "vqvae" / "config.json").is_file():
            raise OSError(f"{path} holds neither a tokenizer (config.json) nor a pipeline's vqvae/config.json")
        subfolder = "vqvae"
    with quiet_loading():
        return MGNTVQModel.from_pretrained(path, subfolder=subfolder) if subfolder else \
            MGNTVQModel.from_pretrained(path)


def evaluate_tokenizer(args: argparse.Namespace) -> int:
    """Encode -> decode real videos (or images) with the tokenizer; print and optionally save the scores."""
    check_positive_int("--batch-size", args.batch_size)
    if args.limit_real is not None:
        check_positive_int("--limit-real", args.limit_real)
    if args.output is not None and not args.output.endswith(".json"):
        raise ValueError(f"--output {args.output!r} must be a .json file")
    set_threads(args)
    device = resolve_device_argument(args)
    from .evaluation import load_classifier

    vqvae = load_tokenizer(args.tokenizer, args.subfolder).to(device).eval()
    if vqvae.config.is_video:
        from .evaluation import format_video_tokenizer_results, load_video_arrays, video_tokenizer_reconstruction

        classifier = load_classifier(args.classifier, DEFAULT_FRAME_CLASSIFIER)
        videos, labels = load_video_arrays(args.dataset, args.split, limit=args.limit_real)
        videos = videos[:, : vqvae.config.num_frames]  # clips of the tokenizer's length, as evaluate-video cuts them
        results = video_tokenizer_reconstruction(vqvae, classifier, videos, labels, batch_size=args.batch_size,
                                                 device=device, progress=True)
        results["settings"] = {"dataset": args.dataset, "split": args.split, "limit": args.limit_real}
        print(format_video_tokenizer_results(results, name=args.tokenizer))
    else:
        from .evaluation import fashion_mnist_pixels, load_reference_images, tokenizer_reconstruction

        classifier = load_classifier(args.classifier, DEFAULT_CLASSIFIER)
        if args.reference_images is None:
            pixels, labels = fashion_mnist_pixels("test", image_size=classifier.config.image_size)
        else:
            pixels, labels = load_reference_images(args.reference_images)
        results = tokenizer_reconstruction(vqvae, classifier, pixels, pixels, labels, batch_size=args.batch_size,
                                           device=device, progress=True)
        accuracy = "n/a" if results["class_accuracy"] is None else f"{100 * results['class_accuracy']:.1f}%"
        print(f"tokenizer reconstruction of {results['num_images']} images: cFID {results['classifier_fid']:.3f}, "
              f"MSE {results['mse']:.5f} (pixels in [-1, 1]), class accuracy {accuracy}")
    results["tokenizer"] = args.tokenizer
    if args.output is not None:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------------------------------------
# mgnt extract
# ---------------------------------------------------------------------------------------------

def pipeline_classes() -> dict[str, type]:
    """The pipeline classes `mgnt extract` loads, by the `_class_name` a saved model_index.json records."""
    from .pipeline_mgnt import MGNTPipeline
    from .pipeline_mgnt_inpaint import MGNTInpaintPipeline
    from .pipeline_mgnt_video import MGNTVideoPipeline

    return {cls.__name__: cls for cls in (MGNTPipeline, MGNTInpaintPipeline, MGNTVideoPipeline)}


def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved pipeline folder or Hub repo id (default: the shipped {DEFAULT_PIPELINE})")
    parser.add_argument("--width", type=int, required=True, help="the nested width to extract (one of nested_widths)")
    parser.add_argument("--output", required=True, help="folder to save the extracted pipeline to")
    parser.add_argument("--clip", action="store_true",
                        help="run the width schedule's segments wider than --width at --width (default: refuse them)")


def folder_size_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def extract(args: argparse.Namespace) -> int:
    """Load the pipeline (of the class its model_index.json names), extract `--width`, save it, print its size."""
    from diffusers import DiffusionPipeline

    source = resolve_pipeline(args.pipeline)
    classes = pipeline_classes()
    class_name = DiffusionPipeline.load_config(source).get("_class_name")
    if class_name not in classes:
        raise ValueError(f"{source} holds a {class_name!r}; mgnt extract takes {sorted(classes)}")
    pipe = classes[class_name].from_pretrained(source)
    hidden_size = pipe.transformer.config.hidden_size
    extracted = pipe.extract_submodel(args.width, clip=args.clip)
    output = Path(args.output)
    extracted.save_pretrained(output)
    config = extracted.transformer.config
    num_parameters = sum(parameter.numel() for parameter in extracted.transformer.parameters())
    print(f"wrote {output}: {class_name} with a transformer of hidden size {config.hidden_size} (of {hidden_size}), "
          f"{config.num_attention_heads} heads, MLP {config.intermediate_size}, nested widths "
          f"{list(config.nested_widths)}, {num_parameters:,} parameters")
    print(f"width schedule: {extracted.scheduler.config.width_schedule} (fractions of {config.hidden_size})")
    print(f"size on disk: transformer {folder_size_bytes(output / 'transformer') / 1e6:.2f} MB, "
          f"pipeline {folder_size_bytes(output) / 1e6:.2f} MB")
    return 0


# ---------------------------------------------------------------------------------------------
# mgnt inpaint
# ---------------------------------------------------------------------------------------------


def add_inpaint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default=None,
                        help=f"saved pipeline folder or Hub repo id (default: the shipped {DEFAULT_PIPELINE})")
    parser.add_argument("--image", required=True, help="image to edit (PNG, ...), at the tokenizer's resolution")
    parser.add_argument("--mask", required=True,
                        help="mask image of the same size, mode L or 1: white = regenerate, black = keep")
    parser.add_argument("--labels", nargs="+", required=True,
                        help="class ids and/or names to regenerate the masked part under, or 'all'"
                             + class_names_help(DEFAULT_PIPELINE))
    parser.add_argument("--num-images-per-label", type=int, default=1, help="results per label: one grid row each")
    add_decoding_arguments(parser, "image")
    parser.add_argument("--output", required=True,
                        help="PNG to write: the edited image (one result), or a grid with one row per label")
    parser.add_argument("--comparison", default=None,
                        help="also write a PNG with one row per label: the image, the image with the regenerated "
                             "tokens in gray, then the results (default: none)")
    parser.add_argument("--scale", type=int, default=None,
                        help="integer upscaling of each image (default: none for one result, else to 64 px)")
    add_device_arguments(parser, dtype=True)


def read_image(path: str, what: str):
    """The image file at `path`, loaded as a PIL image (`OSError` naming `what` if it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except OSError as error:
        raise OSError(f"cannot read the {what} {path}: {error}") from error


def inpaint(args: argparse.Namespace) -> int:
    check_positive_int("--num-images-per-label", args.num_images_per_label)
    check_positive_int("--scale", args.scale, allow_none=True)
    check_seed("--seed", args.seed)
    check_image_output(args.output)
    if args.comparison is not None:
        check_image_output(args.comparison, "--comparison")
    device = resolve_device_argument(args)
    image, mask = read_image(args.image, "--image"), read_image(args.mask, "--mask")

    from PIL import Image

    from .evaluation import seeded_generators, synchronize
    from .pipeline_mgnt_inpaint import MGNTInpaintPipeline
    from .visualization import labelled_grid, masked_preview

    pipe = load_for_generation(MGNTInpaintPipeline, args, device, DEFAULT_PIPELINE)
    config = pipe.transformer.config
    label_ids = pipe.get_label_ids(parse_labels(args.labels, config.num_classes))
    num_images = len(label_ids) * args.num_images_per_label
    check_seed("--seed", args.seed, num_images)
    generators = seeded_generators(device, args.seed, num_images)

    start = time.perf_counter()
    output = pipe(label_ids, image, mask, num_inference_steps=args.steps, guidance_scale=args.guidance,
                  generator=generators, use_cache=False if args.no_cache else None,
                  width_schedule=parse_width_schedule(args.width_schedule),
                  num_images_per_prompt=args.num_images_per_label, output_type="pil")
    synchronize(device)
    seconds = time.perf_counter() - start

    id2label = config.id2label if len(config.id2label or {}) == config.num_classes else {}
    row_names = [f"{i}: {id2label[i]}" if i in id2label else str(i) for i in label_ids]
    height = output.images[0].height
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    if num_images == 1:
        scale = args.scale or 1
        output.images[0].resize((output.images[0].width * scale, height * scale), Image.NEAREST).save(args.output)
    else:
        grid = labelled_grid(output.images, row_names, args.num_images_per_label, args.scale or max(1, 64 // height))
        grid.save(args.output)
    print(f"wrote {args.output}: {len(label_ids)} labels x {args.num_images_per_label} images")
    if args.comparison is not None:
        per_label = args.num_images_per_label
        preview = masked_preview(image, output.token_mask[0].cpu().numpy())
        images = [item for row in range(len(label_ids))
                  for item in (image, preview, *output.images[row * per_label:(row + 1) * per_label])]
        comparison = labelled_grid(images, row_names, 2 + per_label, args.scale or max(1, 64 // height))
        Path(args.comparison).parent.mkdir(parents=True, exist_ok=True)
        comparison.save(args.comparison)
        print(f"wrote {args.comparison}: per label the image, the regenerated tokens (gray) and the results")
    num_regenerated = int(output.token_mask[0].sum())
    print(f"tokens regenerated: {num_regenerated} of {config.num_grid_tokens}")
    print(f"widths per step: {output.widths}")
    print(f"GFLOPs/image (transformer, both guidance branches): {output.gflops_per_image:.4f}")
    print(f"seconds/image ({device}, {args.dtype}, incl. tokenizer): {seconds / num_images:.4f}")
    return 0


# ---------------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One `mgnt` command: `add_arguments(parser)` adds its options, `handler(args)` runs it (exit status)."""

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS = {
    "generate": Command(
        "generate a labelled grid of images",
        "Generate images with an MGNTPipeline and write a grid image (one row per label).",
        add_generate_arguments, generate),
    "inpaint": Command(
        "regenerate the masked part of an image under class labels (inpainting, outpainting, class swap)",
        "Encode --image with the tokenizer, mask every token whose footprint touches a white pixel of --mask, and "
        "decode those tokens again under each label with the pipeline's width schedule and KV cache; the other "
        "tokens are kept exactly. Writes the result (or a grid, one row per label) and optionally a comparison.",
        add_inpaint_arguments, inpaint),
    "extract": Command(
        "save one nested width of a pipeline as a standalone, smaller pipeline",
        "Extract the nested sub-model of --width as a transformer of that hidden size (copies of the leading "
        "slices of every weight; its outputs equal the full model's at that width), with the same tokenizer and "
        "the width schedule re-expressed in the new hidden size, and save the pipeline to --output.",
        add_extract_arguments, extract),
    "evaluate": Command(
        "sample quality (classifier FID, class accuracy) against GFLOPs per width schedule",
        "Sample the pipeline under several width schedules with the same seeds and report, per row, classifier FID "
        "against the real Fashion-MNIST test split, class accuracy, GFLOPs and seconds per image, plus the "
        "tokenizer's reconstruction quality. Writes results.md, results.json, quality_vs_gflops.png and "
        "samples/<row>.png to --output-dir.",
        add_evaluate_arguments, evaluate),
    "search-schedule": Command(
        "the best width schedule within each GFLOPs/image budget, stored in the pipeline",
        "Enumerate width schedules (non-decreasing widths, 2-16 steps, cache on/off) whose analytic GFLOPs fit each "
        "budget, score them with the classifier on one set of seeds, confirm the best on a disjoint set, and print "
        "the table; --write stores it as the scheduler's budget_schedules (pipe(labels, max_gflops_per_image=G)).",
        add_search_schedule_arguments, search_schedule),
    "generate-video": Command(
        "generate videos of classes, or predict a video's continuation",
        "Generate videos with an MGNTVideoPipeline (one row per label) or, with --context-video, predict the frames "
        "that follow its first --context-frames frames; writes a GIF or a video file whose frames tile all the "
        "videos (one video is written as it is, so it can be the --context-video of another call).",
        add_generate_video_arguments, generate_video),
    "evaluate-video": Command(
        "video quality (per-frame classifier FID, accuracy, temporal consistency, PSNR/SSIM of frame prediction, "
        "optional FVD) against GFLOPs per width schedule",
        "Sample an MGNTVideoPipeline under several width schedules with the same seeds and report, per row, "
        "class-conditional generation (per-frame classifier FID, accuracy, temporal consistency) and frame "
        "prediction (PSNR, SSIM) with GFLOPs and seconds per video; FVD with --i3d-torchscript. Writes results.md, "
        "results.json and samples/ to --output-dir.",
        add_evaluate_video_arguments, evaluate_video),
    "evaluate-tokenizer": Command(
        "how well a tokenizer alone reproduces real videos or images (PSNR, SSIM, classifier accuracy)",
        "Encode -> decode real videos (a video tokenizer) or images (an image tokenizer) and report the pixel error "
        "(PSNR, SSIM for videos) and the classifier's FID and accuracy on the reconstructions next to the real "
        "data's: whether the items stay recognisable. Prints a table; --output also writes JSON.",
        add_evaluate_tokenizer_arguments, evaluate_tokenizer),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that appends "(default: ...)" to an option's help, except where the help already says
    what the default is (options whose default is None describe it in words) and for on/off flags."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.default is None or isinstance(
                action, (argparse._StoreTrueAction, argparse._HelpAction)):
            return action.help
        return super()._get_help_string(action)


def build_parser(commands=None) -> argparse.ArgumentParser:
    """`mgnt COMMAND ...`: one subparser per entry of `COMMANDS`, with the options of the commands named in
    `commands` (default: all). `main` adds only the options of the command being run: adding a command's options
    may import what its help lists (presets, choices), and `mgnt --help` needs none of them."""
    parser = argparse.ArgumentParser(prog="mgnt", description="MaGNeTS (mgnt_hf) command line")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help, description=command.description,
                                          formatter_class=HelpFormatter)
        if commands is None or name in commands:
            command.add_arguments(subparser)
    return parser


def build_command_parser(name: str, prog: str) -> argparse.ArgumentParser:
    """A stand-alone parser called `prog` for the one command `name` (what a benchmark script parses)."""
    if name not in COMMANDS:
        raise ValueError(f"unknown mgnt command {name!r}; allowed: {sorted(COMMANDS)}")
    parser = argparse.ArgumentParser(prog=prog, description=COMMANDS[name].description, formatter_class=HelpFormatter)
    COMMANDS[name].add_arguments(parser)
    parser.set_defaults(command=name)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run `mgnt` with `argv` (default: `sys.argv[1:]`); errors a user can fix print one line and return 2.

    With `prog`, `argv[0]` names the command and the rest is parsed by [`build_command_parser`] under that
    program name (usage and errors then say `prog`, as a script of its own would).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if prog is None:
        args = build_parser(commands=argv[:1]).parse_args(argv)
        error_prefix = f"mgnt {args.command}"
    else:
        args = build_command_parser(argv[0], prog).parse_args(argv[1:])
        error_prefix = prog
    try:
        with quiet_loading():
            return COMMANDS[args.command].handler(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"{error_prefix}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
