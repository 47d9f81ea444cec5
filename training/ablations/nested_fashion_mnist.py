"""Ablation of nested joint training on Fashion-MNIST: one short run per setting, the same budget per row.

Every row trains a proxy transformer from scratch with `training/train_mgnt.py` (the shipped tokenizer, the
same data, seed and number of steps; only the row's setting differs), then measures:

- held-out masked-token cross-entropy of every nested width on the Fashion-MNIST test split (fixed masks drawn
  from the training mask schedule with one seed for every row): the direct measure of how good each width is;
- classifier FID and class accuracy (the shipped classifier) of 12-step MaskGIT at full width, of the smallest
  width alone, and of the default MaGNeTS schedule with its cache, on one set of seeds shared by every row.

A row whose result file exists is not rerun, so the study can be stopped and continued. The table goes to
`--docs_dir` as `ablation.md` and `ablation.json`.

    python training/ablations/nested_fashion_mnist.py --output_dir runs/ablation --docs_dir docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from mgnt_hf import MGNTPipeline
from mgnt_hf.evaluation.data import fashion_mnist_pixels, load_classifier
from mgnt_hf.evaluation.image import ImageSampling, sample_row
from mgnt_hf.evaluation.metrics import cached_reference_statistics, evaluate_samples
from mgnt_hf.evaluation.rows import batches, check_num_inference_steps, parse_row
from mgnt_hf.nested_training import random_training_mask

REPO = Path(__file__).resolve().parents[2]

# The proxy: the shipped model's recipe at half the width and two thirds of the depth (so that a row fits in
# minutes of one CPU core), nested widths D/8 ... D as in the shipped model.
PROXY_CONFIG = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 512,
                "nested_widths": [16, 32, 64, 128], "class_dropout_prob": 0.1, "hidden_dropout_prob": 0.0}

# name -> (what differs from the baseline, train_mgnt.py arguments, proxy config overrides)
ROWS = {
    "baseline": ("distillation weight 1 from the full width, temperature 1, all widths every step, equal "
                 "per-width weights, cosine training masks, EMA 0.99", {}, {}),
    "baseline-seed-1": ("the baseline with seed 1 (initialisation, data order, masks): the noise floor",
                        {"seed": 1}, {}),
    "no-distillation": ("distillation weight 0 (every width learns the ground truth only)",
                        {"distillation_weight": 0.0}, {}),
    "distillation-weight-3": ("distillation weight 3", {"distillation_weight": 3.0}, {}),
    "temperature-2": ("distillation temperature 2", {"distillation_temperature": 2.0}, {}),
    "distill-from-next": ("each width distils the next larger width", {"distill_from": "next"}, {}),
    "sampled-widths": ("the full width plus one smaller width drawn per step (fewer FLOPs per step)",
                       {"widths_per_step": "sampled"}, {}),
    "small-widths-weighted": ("per-width loss weights 2, 1.5, 1.25, 1 (smallest first)",
                              {"width_loss_weights": [2.0, 1.5, 1.25, 1.0]}, {}),
    "arccos-masks": ("arccos training mask schedule", {"mask_schedule": "arccos"}, {}),
    "ema-0.999": ("EMA decay 0.999", {"ema_decay": 0.999}, {}),
    "depth-6": ("6 layers instead of 4 (1.5x the FLOPs per step)", {}, {"num_hidden_layers": 6}),
}

BASELINE_TRAINING = {"distillation_weight": 1.0, "distillation_temperature": 1.0, "distill_from": "full",
                     "widths_per_step": "all", "mask_schedule": "cosine", "ema_decay": 0.99, "seed": 0}
EVAL_ROWS = ("maskgit", "smallest", "default+cache")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/ablation")
    parser.add_argument("--docs_dir", default="docs", help="where ablation.md and ablation.json are written")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--vqvae", default=str(REPO / "pipelines/mgnt-fashion-mnist/vqvae"))
    parser.add_argument("--dataset", default=str(REPO / "data/fashion-mnist"))
    parser.add_argument("--token_cache_dir", default=None, help="shared by every row (default: <output_dir>/token-cache)")
    parser.add_argument("--max_train_steps", type=int, default=200)
    parser.add_argument("--train_batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_warmup_steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples_per_class", type=int, default=30)
    parser.add_argument("--eval_seed", type=int, default=100_000, help="image j of every row uses seed eval_seed + j")
    parser.add_argument("--heldout_images", type=int, default=2000, help="test images for the held-out loss")
    parser.add_argument("--report_only", action="store_true", help="write the table from the finished rows")
    return parser.parse_args(argv)


def train_command(args, name: str, config_path: Path) -> list[str]:
    _, training, _ = ROWS[name]
    settings = {**BASELINE_TRAINING, **training}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training/train_mgnt.py"),
               "--vqvae_name_or_path", args.vqvae, "--dataset_name", args.dataset, "--resize_mode", "pad",
               "--random_flip", "--transformer_config", str(config_path),
               "--output_dir", str(Path(args.output_dir) / name),
               "--token_cache_dir", args.token_cache_dir or str(Path(args.output_dir) / "token-cache"),
               "--train_batch_size", str(args.train_batch_size), "--learning_rate", str(args.learning_rate),
               "--lr_warmup_steps", str(args.lr_warmup_steps), "--max_train_steps", str(args.max_train_steps),
               "--checkpointing_steps", str(args.max_train_steps), "--checkpoints_total_limit", "1",
               "--use_ema", "--report_to", "none", "--logging_steps", "20"]
    for key, value in settings.items():
        command += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return command


def heldout_tokens(args, vqvae, pixels: torch.Tensor) -> torch.Tensor:
    """Token grids `[N, h*w]` of the first `heldout_images` of the test images `pixels` (cached)."""
    path = Path(args.output_dir) / f"heldout-tokens-{args.heldout_images}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    with torch.no_grad():
        tokens = torch.cat([vqvae.encode(chunk).flatten(1) for chunk in pixels[: args.heldout_images].split(250)])
    torch.save(tokens, path)
    return tokens


@torch.no_grad()
def heldout_loss(transformer, tokens: torch.Tensor, labels: torch.Tensor) -> dict[int, float]:
    """Masked-token cross-entropy of every nested width, masks from the cosine training schedule (seed 0)."""
    config = transformer.config
    generator = torch.Generator().manual_seed(0)
    masked = random_training_mask(tokens.shape[0], tokens.shape[1], "cosine", generator=generator)
    inputs = torch.where(masked, torch.full_like(tokens, config.mask_token_id), tokens)
    losses = {}
    for width in config.nested_widths:
        total, count = 0.0, 0
        for start in range(0, tokens.shape[0], 250):
            rows = slice(start, start + 250)
            logits = transformer(inputs[rows], labels[rows], width=width).logits
            chosen = masked[rows]
            total += float(torch.nn.functional.cross_entropy(logits[chosen].float(), tokens[rows][chosen],
                                                              reduction="sum"))
            count += int(chosen.sum())
        losses[width] = total / count
    return losses


def sample_quality(args, pipe, classifier, statistics) -> dict:
    num_classes = pipe.transformer.config.num_classes
    num_samples = num_classes * args.samples_per_class
    steps = check_num_inference_steps(pipe, None)
    sampling = ImageSampling(pipe, torch.device("cpu"), steps, pipe.scheduler.config.guidance_scale, args.eval_seed,
                             torch.arange(num_samples) % num_classes, batches(num_samples, 100))
    smallest = pipe.transformer.config.nested_widths[0]
    results = {}
    for name in EVAL_ROWS:
        row = parse_row(f"width-{smallest}" if name == "smallest" else name, pipe, steps)
        pixels, cost = sample_row(sampling, row)
        scores = evaluate_samples(classifier, pixels, sampling.labels, statistics, 500)
        results[name] = {"row": row.name, "gflops_per_image": cost["gflops_per_image"],
                         "classifier_fid": scores["classifier_fid"], "class_accuracy": scores["class_accuracy"],
                         "num_samples": scores["num_samples"]}
    return results


def run_row(args, name: str, classifier, statistics, heldout) -> dict:
    row_dir = Path(args.output_dir) / name
    result_path = row_dir / "ablation_row.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    description, training, overrides = ROWS[name]
    config_path = Path(args.output_dir) / f"{name}-config.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps({**PROXY_CONFIG, **overrides}, indent=1))
    command = train_command(args, name, config_path)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    with open(Path(args.output_dir) / f"{name}.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    train_seconds = time.perf_counter() - start

    pipe = MGNTPipeline.from_pretrained(row_dir)
    pipe.set_progress_bar_config(disable=True)
    tokens, labels = heldout
    result = {"name": name, "description": description, "train_arguments": {**BASELINE_TRAINING, **training},
              "proxy_config": {**PROXY_CONFIG, **overrides}, "train_wall_seconds": train_seconds,
              "parameters": pipe.transformer.num_parameters(),
              "heldout_cross_entropy": {str(w): v for w, v in heldout_loss(pipe.transformer.eval(), tokens,
                                                                           labels).items()},
              "samples": sample_quality(args, pipe, classifier, statistics)}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def format_table(results: list[dict]) -> str:
    widths = list(results[0]["heldout_cross_entropy"])
    head = (["row", "setting"] + [f"held-out CE w{w}" for w in widths]
            + ["cFID MaskGIT", "cFID smallest", "cFID default+cache", "acc. default+cache", "train min"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results:
        samples = row["samples"]
        cells = [row["name"], row["description"]]
        cells += [f"{row['heldout_cross_entropy'][w]:.3f}" for w in widths]
        cells += [f"{samples[k]['classifier_fid']:.2f}" for k in EVAL_ROWS]
        cells += [f"{100 * samples['default+cache']['class_accuracy']:.1f}%", f"{row['train_wall_seconds'] / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


NOTES_MARKER = "<!-- notes: kept when the table is rewritten -->"


def write_with_notes(path: Path, header: list[str], table: str) -> None:
    """`header` lines, then the table; whatever follows `NOTES_MARKER` in an existing file is kept."""
    notes = ""
    if path.is_file() and NOTES_MARKER in path.read_text():
        notes = path.read_text().split(NOTES_MARKER, 1)[1]
    path.write_text("\n".join(header) + "\n" + table + "\n\n" + NOTES_MARKER + (notes or "\n"))


def write_markdown(path: Path, table: str, settings: dict) -> None:
    """The table with its settings; whatever follows `NOTES_MARKER` in an existing file is kept."""
    header = [
        "# Nested training ablation (Fashion-MNIST proxy)", "",
        "Written by `python training/ablations/nested_fashion_mnist.py` (one row per setting, the same budget per "
        "row: every row trains from scratch for the same steps, batch, learning rate and seed unless the row "
        "changes it).", "",
        f"Proxy transformer: `{json.dumps(settings['proxy_config'])}`; shipped tokenizer (8x8 tokens, 512 codes); "
        f"{settings['max_train_steps']} steps of {settings['train_batch_size']} token grids (training set plus "
        f"flips), lr {settings['learning_rate']} with {settings['lr_warmup_steps']} warm-up steps then cosine, fp32, "
        f"{settings['threads']} thread(s) on {settings['machine']}.", "",
        f"Held-out CE: masked-token cross-entropy (nats) of each width on {settings['heldout_images']} test images, "
        "the same cosine-schedule masks for every row. cFID / accuracy: shipped classifier, "
        f"{10 * settings['samples_per_class']} samples per column (seeds {settings['eval_seed']}+j, the same in "
        "every row), 12 steps, guidance as the saved scheduler; `smallest` = the smallest width alone, "
        "`default+cache` = the default MaGNeTS schedule with the cache.", "",
    ]
    write_with_notes(path, header, table)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    classifier = load_classifier()
    from mgnt_hf import MGNTVQModel

    vqvae = MGNTVQModel.from_pretrained(args.vqvae).eval()
    reference, reference_labels = fashion_mnist_pixels("test", image_size=classifier.config.image_size)
    statistics, _ = cached_reference_statistics(classifier, reference, Path(args.output_dir) / "reference", 500)
    heldout = (heldout_tokens(args, vqvae, reference), reference_labels[: args.heldout_images])
    results = []
    for name in args.rows:
        if args.report_only and not (Path(args.output_dir) / name / "ablation_row.json").is_file():
            continue
        print(f"[ablation] {name}", flush=True)
        results.append(run_row(args, name, classifier, statistics, heldout))
        print(json.dumps({k: results[-1][k] for k in ("name", "heldout_cross_entropy", "train_wall_seconds")}),
              flush=True)
    settings = {"max_train_steps": args.max_train_steps, "train_batch_size": args.train_batch_size,
                "learning_rate": args.learning_rate, "lr_warmup_steps": args.lr_warmup_steps,
                "threads": args.threads, "samples_per_class": args.samples_per_class, "eval_seed": args.eval_seed,
                "heldout_images": args.heldout_images, "proxy_config": PROXY_CONFIG,
                "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    docs = Path(args.docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "ablation.json").write_text(json.dumps({"settings": settings, "rows": results}, indent=1))
    table = format_table(results) if results else "(no finished rows)"
    write_markdown(docs / "ablation.md", table, settings)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
