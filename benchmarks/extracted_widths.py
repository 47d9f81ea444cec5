"""Size on disk and speed of every nested width of a pipeline extracted as its own model (`extract_submodel`).

For each width `w` of `transformer.config.nested_widths`: `pipe.extract_submodel(w, clip=True)` is saved to a
temporary folder (its size on disk: the transformer folder, and the whole pipeline with the tokenizer), then the
extracted pipeline decodes `--batch-size` images at its own full width for `--steps` steps with the KV cache
(`width_schedule=[[1.0, steps]]`), next to the parent pipeline decoding the same images at width `w`
(`[[w / D, steps]]`): the same decode, so the tokens should be equal (counted) and the speed about the same; what
the extraction buys is the size. Image `j` has class `j % num_classes` and a generator seeded `j`, as in
`mgnt evaluate --frontier`, so each row's quality is that of the frontier's `width-<w>-<steps>+cache` row.

Timing: token grids only (`output_type="latent"`, the tokenizer's decode is the same in every row), guidance as
the scheduler says, one untimed warm-up decode per pipeline, then `--runs` timed decodes of each, alternating;
best and median images/s. One process, `--threads` torch threads.

    python benchmarks/extracted_widths.py --threads 1 --batch-size 10 --runs 5 --output extracted_widths.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mgnt_hf import MGNTPipeline, shipped
from mgnt_hf.resources import DEFAULT_PIPELINE


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def folder_megabytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def decode(pipe, num_images: int, width_schedule) -> tuple[float, torch.LongTensor, float]:
    """Seconds of one decode of `num_images` (classes j % num_classes, generators seeded j), its tokens, GFLOPs."""
    num_classes = pipe.transformer.config.num_classes
    generators = [torch.Generator().manual_seed(j) for j in range(num_images)]
    start = time.perf_counter()
    out = pipe([j % num_classes for j in range(num_images)], generator=generators, output_type="latent",
               width_schedule=width_schedule, use_cache=True)
    return time.perf_counter() - start, out.images, out.gflops_per_image


def measure_width(pipe, width: int, args) -> dict:
    hidden_size = pipe.transformer.config.hidden_size
    extracted = pipe.extract_submodel(width, clip=True)
    with tempfile.TemporaryDirectory() as folder:
        extracted.save_pretrained(folder)
        transformer_mb, pipeline_mb = folder_megabytes(Path(folder) / "transformer"), folder_megabytes(Path(folder))
    schedules = {"extracted": (extracted, [[1.0, args.steps]]), "parent": (pipe, [[width / hidden_size, args.steps]])}
    seconds = {name: [] for name in schedules}
    tokens, gflops = {}, {}
    for name, (candidate, schedule) in schedules.items():  # warm-up, tokens and GFLOPs
        _, tokens[name], gflops[name] = decode(candidate, args.batch_size, schedule)
    for _ in range(args.runs):
        for name, (candidate, schedule) in schedules.items():
            seconds[name].append(decode(candidate, args.batch_size, schedule)[0])
    identical = int((tokens["extracted"] == tokens["parent"]).flatten(1).all(dim=1).sum())
    row = {
        "width": width,
        "num_parameters": sum(p.numel() for p in extracted.transformer.parameters()),
        "transformer_mb": transformer_mb,
        "pipeline_mb": pipeline_mb,
        "gflops_per_image": gflops["extracted"],
        "parent_gflops_per_image": gflops["parent"],
        "identical_images": identical,
        "num_images": args.batch_size,
    }
    for name, runs in seconds.items():
        row[f"{name}_seconds"] = runs
        row[f"{name}_images_per_second_best"] = args.batch_size / min(runs)
        row[f"{name}_images_per_second_median"] = args.batch_size / statistics.median(runs)
    return row


def format_table(rows: list[dict], hidden_size: int, steps: int) -> str:
    lines = ["| width | parameters | transformer MB | pipeline MB | GFLOPs/image | images/s extracted (best / median) "
             "| images/s parent at that width (best / median) | identical tokens |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['width']}{' (full)' if row['width'] == hidden_size else ''} | {row['num_parameters']:,} "
            f"| {row['transformer_mb']:.2f} | {row['pipeline_mb']:.2f} | {row['gflops_per_image']:.3f} "
            f"| {row['extracted_images_per_second_best']:.1f} / {row['extracted_images_per_second_median']:.1f} "
            f"| {row['parent_images_per_second_best']:.1f} / {row['parent_images_per_second_median']:.1f} "
            f"| {row['identical_images']}/{row['num_images']} |")
    return "\n".join(lines) + f"\n\n{steps} steps at the row's width, KV cache on, token grids only."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=None, help=f"pipeline folder (default: the shipped {DEFAULT_PIPELINE})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=10, help="images per decode (default 10)")
    parser.add_argument("--runs", type=int, default=5, help="timed decodes per pipeline and width (default 5)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--output", default=None, help="JSON file for the rows and the conditions")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    pipe = MGNTPipeline.from_pretrained(args.pipeline or shipped(DEFAULT_PIPELINE))
    pipe.set_progress_bar_config(disable=True)
    config = pipe.transformer.config
    rows = [measure_width(pipe, width, args) for width in config.nested_widths]
    print(format_table(rows, config.hidden_size, args.steps))
    if args.output:
        conditions = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "pipeline": str(args.pipeline or DEFAULT_PIPELINE),
            "cpu": cpu_model(),
            "threads": args.threads,
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "batch_size": args.batch_size,
            "runs": args.runs,
            "steps": args.steps,
            "guidance_scale": pipe.scheduler.config.guidance_scale,
        }
        Path(args.output).write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
