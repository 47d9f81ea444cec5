"""Position embeddings of the video transformer, measured: time x joint(h, w) tables against fully factorised
t / h / w tables (`MGNTConfig.position_embedding_type` "joint" and "factorized"), the same budget per row.

Every row trains a proxy video transformer from scratch with `training/train_mgnt.py` on Moving Fashion-MNIST
(the shipped video tokenizer's codes, the recipe's frame-prediction context, the same data, seed and steps; only
the row's setting differs), then measures on held-out test videos, with masks drawn once (seed 0) and shared by
every row:

- masked-token cross-entropy of every nested width, class-conditional generation masks (the whole grid maskable);
- the same for frame prediction: the first `--context_frames` frames' tokens given, only the rest masked.

A second seed of each setting gives the noise floor. A row whose result file exists is not rerun. The table goes
to `--docs_dir` as `video_positions.md` and `.json`.

    python training/ablations/video_positions.py --output_dir runs/video-positions --docs_dir docs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nested_fashion_mnist import cpu_name, write_with_notes  # noqa: E402  (a sibling script, not a package)

from mgnt_hf import MGNTTransformer, MGNTVQModel  # noqa: E402
from mgnt_hf.evaluation.data import load_video_arrays, videos_to_tensor  # noqa: E402
from mgnt_hf.nested_training import random_training_mask  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# The shipped video transformer's recipe (training/configs/mgnt-moving-fashion-mnist.json) at 4 of its 6 layers,
# so that a row fits in minutes of one CPU core.
PROXY_CONFIG = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 512,
                "nested_widths": [16, 32, 64, 128], "class_dropout_prob": 0.1, "hidden_dropout_prob": 0.0}

# name -> (what differs, seed, config overrides)
ROWS = {
    "joint": ("a table per latent frame + a table per (h, w) position (the first shipped video model's)", 0,
              {"position_embedding_type": "joint"}),
    "factorized": ("a table per latent frame + a row table + a column table", 0,
                   {"position_embedding_type": "factorized"}),
    "joint-seed-1": ("joint, seed 1 (initialisation, data order, masks): the noise floor", 1,
                     {"position_embedding_type": "joint"}),
    "factorized-seed-1": ("factorized, seed 1", 1, {"position_embedding_type": "factorized"}),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/video-positions")
    parser.add_argument("--docs_dir", default="docs", help="where video_positions.md and .json are written")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--vqvae", default=str(REPO / "pipelines/mgnt-moving-fashion-mnist/vqvae"))
    parser.add_argument("--dataset", default=str(REPO / "data/moving-fashion-mnist"))
    parser.add_argument("--max_train_steps", type=int, default=300)
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_warmup_steps", type=int, default=20)
    parser.add_argument("--context_frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heldout_videos", type=int, default=500, help="test videos for the held-out losses")
    parser.add_argument("--report_only", action="store_true", help="write the table from the finished rows")
    return parser.parse_args(argv)


def train_command(args, name: str, config_path: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training/train_mgnt.py"),
            "--vqvae_name_or_path", args.vqvae, "--dataset_name", args.dataset,
            "--transformer_config", str(config_path), "--output_dir", str(Path(args.output_dir) / name),
            "--token_cache_dir", str(Path(args.output_dir) / "token-cache"),
            "--context_frames", str(args.context_frames), "--context_probability", "0.5",
            "--train_batch_size", str(args.train_batch_size), "--learning_rate", str(args.learning_rate),
            "--lr_warmup_steps", str(args.lr_warmup_steps), "--max_train_steps", str(args.max_train_steps),
            "--checkpointing_steps", str(args.max_train_steps), "--checkpoints_total_limit", "1",
            "--use_ema", "--ema_decay", "0.99", "--validation_steps", str(10 * args.max_train_steps),
            "--report_to", "none", "--logging_steps", "20", "--seed", str(ROWS[name][1])]


@torch.no_grad()
def heldout_tokens(args, vqvae) -> tuple[torch.Tensor, torch.Tensor]:
    """Token grids `[N, t*h*w]` and labels of the first `heldout_videos` test videos (cached)."""
    path = Path(args.output_dir) / f"heldout-tokens-{args.heldout_videos}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["tokens"], saved["labels"]
    videos, labels = load_video_arrays(args.dataset, "test", limit=args.heldout_videos)
    clips = videos_to_tensor(videos[:, : vqvae.config.num_frames]).permute(0, 2, 1, 3, 4) * 2 - 1  # [N, C, T, H, W]
    tokens = torch.cat([vqvae.encode(chunk).flatten(1) for chunk in clips.split(16)])
    labels = torch.as_tensor(labels)
    torch.save({"tokens": tokens, "labels": labels}, path)
    return tokens, labels


@torch.no_grad()
def heldout_losses(transformer, tokens: torch.Tensor, labels: torch.Tensor, num_context_tokens: int) -> dict:
    """Masked-token cross-entropy (nats) per nested width: `generation` (any token maskable) and `prediction`
    (the context frames' tokens kept), masks from the cosine training schedule with seed 0."""
    config = transformer.config
    results = {}
    for task, fixed in (("generation", None), ("prediction", num_context_tokens)):
        generator = torch.Generator().manual_seed(0)
        num_fixed = None if fixed is None else torch.full((tokens.shape[0],), fixed)
        masked = random_training_mask(tokens.shape[0], tokens.shape[1], "cosine", generator=generator,
                                      num_fixed_tokens=num_fixed)
        inputs = torch.where(masked, torch.full_like(tokens, config.mask_token_id), tokens)
        losses = {}
        for width in config.nested_widths:
            total, count = 0.0, 0
            for rows in torch.arange(tokens.shape[0]).split(50):
                logits = transformer(inputs[rows], labels[rows], width=width).logits
                chosen = masked[rows]
                total += float(torch.nn.functional.cross_entropy(logits[chosen].float(), tokens[rows][chosen],
                                                                  reduction="sum"))
                count += int(chosen.sum())
            losses[str(width)] = total / count
        results[task] = losses
    return results


def run_row(args, name: str, heldout, num_context_tokens: int) -> dict:
    row_dir = Path(args.output_dir) / name
    result_path = row_dir / "ablation_row.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    description, seed, overrides = ROWS[name]
    config_path = Path(args.output_dir) / f"{name}-config.json"
    config_path.write_text(json.dumps({**PROXY_CONFIG, **overrides}, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    with open(Path(args.output_dir) / f"{name}.log", "w") as log:
        subprocess.run(train_command(args, name, config_path), check=True, stdout=log, stderr=subprocess.STDOUT,
                       env=env, cwd=REPO)
    train_seconds = time.perf_counter() - start
    transformer = MGNTTransformer.from_pretrained(row_dir / "transformer").eval()
    tokens, labels = heldout
    result = {"name": name, "description": description, "seed": seed, "proxy_config": {**PROXY_CONFIG, **overrides},
              "train_wall_seconds": train_seconds, "parameters": transformer.num_parameters(),
              "heldout_cross_entropy": heldout_losses(transformer, tokens, labels, num_context_tokens)}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def format_table(results: list[dict]) -> str:
    widths = list(results[0]["heldout_cross_entropy"]["generation"])
    head = (["row", "setting", "parameters"] + [f"generation CE w{w}" for w in widths]
            + [f"prediction CE w{w}" for w in widths] + ["train min"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results:
        losses = row["heldout_cross_entropy"]
        cells = [row["name"], row["description"], f"{row['parameters']:,}"]
        cells += [f"{losses['generation'][w]:.4f}" for w in widths]
        cells += [f"{losses['prediction'][w]:.4f}" for w in widths]
        cells.append(f"{row['train_wall_seconds'] / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, table: str, settings: dict) -> None:
    """The table with its settings; the notes below the marker of an existing file are kept ([`write_with_notes`])."""
    header = [
        "# Video position embeddings: time x joint(h, w) against factorised t / h / w", "",
        "Written by `python training/ablations/video_positions.py` (one row per setting, the same budget per row).",
        "",
        f"Proxy video transformer: `{json.dumps(settings['proxy_config'])}`; tokenizer `{settings['vqvae']}` "
        f"({'x'.join(map(str, settings['token_grid']))} tokens, {settings['codebook_size']} codes); "
        f"{settings['max_train_steps']} steps of {settings['train_batch_size']} clips, "
        f"half of them frame prediction from {settings['context_frames']} frames; lr {settings['learning_rate']} "
        f"with {settings['lr_warmup_steps']} warm-up steps then cosine, EMA 0.99, fp32, {settings['threads']} "
        f"thread(s) on {settings['machine']}.", "",
        f"Held-out CE: masked-token cross-entropy (nats, lower is better; uniform over {settings['codebook_size']} "
        f"codes is {math.log(settings['codebook_size']):.3f}) of each "
        f"width on {settings['heldout_videos']} test videos, cosine-schedule masks drawn once and shared by every "
        "row; prediction: the context frames' tokens given, only the later ones masked and scored.", "",
    ]
    write_with_notes(path, header, table)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    vqvae = MGNTVQModel.from_pretrained(args.vqvae).eval()
    heldout = heldout_tokens(args, vqvae)
    latent_frames, height, width = vqvae.config.token_grid
    num_context_tokens = args.context_frames // vqvae.config.temporal_downsample_factor * height * width
    results = []
    for name in args.rows:
        if args.report_only and not (Path(args.output_dir) / name / "ablation_row.json").is_file():
            continue
        print(f"[video positions] {name}", flush=True)
        results.append(run_row(args, name, heldout, num_context_tokens))
        print(json.dumps({k: results[-1][k] for k in ("name", "heldout_cross_entropy", "train_wall_seconds")}),
              flush=True)
    settings = {"max_train_steps": args.max_train_steps, "train_batch_size": args.train_batch_size,
                "learning_rate": args.learning_rate, "lr_warmup_steps": args.lr_warmup_steps,
                "context_frames": args.context_frames, "threads": args.threads,
                "heldout_videos": args.heldout_videos, "proxy_config": PROXY_CONFIG,
                "vqvae": os.path.relpath(args.vqvae, REPO), "token_grid": list(vqvae.config.token_grid),
                "codebook_size": vqvae.config.codebook_size,
                "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    docs = Path(args.docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "video_positions.json").write_text(json.dumps({"settings": settings, "rows": results}, indent=1))
    table = format_table(results) if results else "(no finished rows)"
    write_markdown(docs / "video_positions.md", table, settings)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
