"""Sampling settings of the video pipeline, measured: token temperature, MaskGIT's choice temperature (the
randomness of which tokens are revealed) and the guidance scale, one row per setting, everything else fixed.

Every row decodes the same videos with the same seeds under one width schedule (default `default+cache`) and is
scored by `mgnt_hf.evaluation.evaluate_video_pipeline`: class-conditional generation (frame and video accuracy
of the shipped frame classifier, per-frame cFID) and frame prediction from the first frames (PSNR, SSIM against
the real continuation and against copying the last given frame). The scheduler settings change nothing in the
network's FLOPs, so the rows cost the same. The table goes to `--docs_dir` as `<--name>.md` and `.json`.

    python training/ablations/video_sampling.py --pipeline runs/mfm-f4-mgnt --name video_sampling
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nested_fashion_mnist import cpu_name, write_with_notes  # noqa: E402  (a sibling script, not a package)

from mgnt_hf import MGNTScheduler, MGNTVideoPipeline  # noqa: E402
from mgnt_hf.evaluation import evaluate_video_pipeline  # noqa: E402
from mgnt_hf.evaluation.data import load_video_arrays  # noqa: E402

# name -> scheduler overrides (temperature, choice_temperature, guidance_scale); "scheduler" is the pipeline's own.
SETTINGS = {
    "scheduler": {},
    "choice-1": {"choice_temperature": 1.0},
    "choice-0": {"choice_temperature": 0.0},
    "temperature-0.7": {"temperature": 0.7},
    "guidance-4": {"guidance_scale": 4.0},
    "guidance-8": {"guidance_scale": 8.0},
    "temperature-0.7-choice-1-guidance-4": {"temperature": 0.7, "choice_temperature": 1.0, "guidance_scale": 4.0},
}
SCORES = (("generation", "frame_accuracy", 100, 1), ("generation", "video_accuracy", 100, 1),
          ("generation", "classifier_fid", 1, 2), ("prediction", "psnr", 1, 2), ("prediction", "ssim", 1, 4))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="a saved MGNTVideoPipeline folder")
    parser.add_argument("--classifier", default=None,
                        help="per-frame classifier folder (default: the shipped moving-fashion-mnist one)")
    parser.add_argument("--dataset", default="data/moving-fashion-mnist")
    parser.add_argument("--context-frames", type=int, default=4, help="given frames of the prediction task")
    parser.add_argument("--row", default="default+cache", help="the width schedule every setting decodes with")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--videos-per-class", type=int, default=10)
    parser.add_argument("--num-prediction-videos", type=int, default=100)
    parser.add_argument("--limit-real", type=int, default=None,
                        help="use only the first N test videos as the real reference (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="video_sampling", help="file name (without suffix) of the results")
    parser.add_argument("--docs_dir", default="docs")
    return parser.parse_args(argv)


def evaluate_setting(pipeline, base_config, overrides: dict, videos, labels, args) -> dict:
    scheduler_overrides = {key: value for key, value in overrides.items() if key != "guidance_scale"}
    pipeline.scheduler = MGNTScheduler.from_config(base_config, **scheduler_overrides)
    results = evaluate_video_pipeline(
        pipeline, args.classifier, videos, labels, rows=[args.row], videos_per_class=args.videos_per_class,
        num_prediction_videos=args.num_prediction_videos, context_frames=args.context_frames,
        guidance_scale=overrides.get("guidance_scale"), device="cpu", progress=False)
    (row,) = results["rows"]
    return {"overrides": overrides, "generation": row["generation"], "prediction": row["prediction"],
            "references": results["references"], "settings": results["settings"]}


def format_table(rows: dict, base_config) -> str:
    lines = ["| setting | temperature | choice temperature | guidance | frame acc % | video acc % | cFID | "
             "prediction PSNR | prediction SSIM |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        overrides = row["overrides"]
        cells = [f"`{name}`", f"{overrides.get('temperature', base_config['temperature']):g}",
                 f"{overrides.get('choice_temperature', base_config['choice_temperature']):g}",
                 f"{overrides.get('guidance_scale', base_config['guidance_scale']):g}"]
        for task, key, scale, digits in SCORES:
            value = row[task][key] if row[task] is not None else None
            cells.append("n/a" if value is None else f"{value * scale:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    args.command = " ".join(["python training/ablations/video_sampling.py", *(sys.argv[1:] if argv is None else argv)])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pipeline = MGNTVideoPipeline.from_pretrained(args.pipeline)
    base_config = dict(pipeline.scheduler.config)
    videos, labels = load_video_arrays(args.dataset, "test", limit=args.limit_real)
    rows, started = {}, time.time()
    for name in args.settings:
        rows[name] = evaluate_setting(pipeline, base_config, SETTINGS[name], videos, labels, args)
        write_results(rows, base_config, args, started, len(videos))  # after every row: a stopped sweep keeps them
    print(format_table(rows, base_config))


def write_results(rows: dict, base_config, args, started: float, num_real: int) -> None:
    docs = Path(args.docs_dir)
    first = next(iter(rows.values()))
    copy_last = first["references"]["copy_last_frame"]
    real = first["references"]["real_videos"]
    header = [
        f"# Video sampling settings ({args.pipeline}, row `{args.row}`)", "",
        f"Written by `{args.command}` "
        f"({time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {(time.time() - started) / 60:.1f} min). "
        f"{args.videos_per_class} generated videos per class and {args.num_prediction_videos} predicted test videos "
        f"per setting, the same seeds in every row, {num_real} real test videos as the reference; only the "
        "scheduler's sampling settings differ.", "",
        f"References: real videos frame accuracy {100 * real['frame_accuracy']:.1f}%; copying the last given frame "
        f"PSNR {copy_last['psnr']:.2f} dB, SSIM {copy_last['ssim']:.4f}.", "",
    ]
    write_with_notes(docs / f"{args.name}.md", header, format_table(rows, base_config))
    (docs / f"{args.name}.json").write_text(json.dumps({"pipeline": args.pipeline, "row": args.row,
                                                        "base_scheduler": base_config, "rows": rows}, indent=2,
                                                       default=str))


if __name__ == "__main__":
    main()
