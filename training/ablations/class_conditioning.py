"""Does the transformer use its class label? `mgnt_hf.evaluation.class_label_probe` on real test data.

Real test images or videos are encoded by the pipeline's tokenizer, masked (the same positions under every label)
and scored under each class label and the null class, at each mask ratio and nested width. A model whose
generations are near chance in class accuracy but whose label information is also near zero has not learned the
conditioning yet (more training, not other sampling settings); one with a large label information but poor class
accuracy loses it in decoding. Image pipelines read Fashion-MNIST (`--fashion-mnist-dir`), video pipelines the
`--dataset` split. The table goes to `--docs_dir` as `<--name>.md` and `.json`.

    python training/ablations/class_conditioning.py --pipeline runs/mfm-f4-mgnt3 --name video_class_conditioning
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

from mgnt_hf import MGNTPipeline, MGNTVideoPipeline  # noqa: E402
from mgnt_hf.evaluation import (  # noqa: E402
    FASHION_MNIST_DIR,
    class_label_probe,
    fashion_mnist_pixels,
    format_probe_table,
    load_video_arrays,
    videos_to_tensor,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", action="append", required=True,
                        help="a saved MGNTPipeline or MGNTVideoPipeline folder; repeat to probe several (one table "
                             "section each, the same examples and masks)")
    parser.add_argument("--dataset", default="data/moving-fashion-mnist", help="video dataset (video pipelines)")
    parser.add_argument("--fashion-mnist-dir", default=FASHION_MNIST_DIR, help="Fashion-MNIST (image pipelines)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-examples", type=int, default=100, help="the first N examples of the split")
    parser.add_argument("--mask-ratios", type=float, nargs="+", default=[1.0, 0.9, 0.5])
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="default: every nested width")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="the masks' seed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="class_conditioning", help="file name (without suffix) of the results")
    parser.add_argument("--docs_dir", default="docs")
    args = parser.parse_args(argv)
    if args.num_examples < 1:
        parser.error(f"--num-examples must be >= 1, got {args.num_examples}")
    return args


def load_pipeline(path: str):
    """The saved pipeline at `path`, video or image (by its `model_index.json`)."""
    index = json.loads((Path(path) / "model_index.json").read_text())
    pipeline_class = MGNTVideoPipeline if index.get("_class_name") == MGNTVideoPipeline.__name__ else MGNTPipeline
    return pipeline_class.from_pretrained(path)


@torch.no_grad()
def real_tokens(pipeline, args) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `--num-examples` examples of the split, through the pipeline's tokenizer: ids and labels."""
    vqvae = pipeline.vqvae
    if isinstance(pipeline, MGNTVideoPipeline):
        videos, labels = load_video_arrays(args.dataset, args.split, limit=args.num_examples)
        if labels is None:
            raise ValueError(f"{args.dataset!r} ({args.split}) has no labels to probe with")
        pixels = videos_to_tensor(videos).permute(0, 2, 1, 3, 4) * 2 - 1  # [N, C, T, H, W] in [-1, 1]
        labels = torch.from_numpy(labels)
    else:
        pixels, labels = fashion_mnist_pixels(args.split, args.fashion_mnist_dir, image_size=vqvae.config.resolution[0])
        pixels, labels = pixels[:args.num_examples], labels[:args.num_examples]
    ids = torch.cat([vqvae.encode(pixels[start:start + args.batch_size].to(vqvae.device, vqvae.dtype)).cpu()
                     for start in range(0, len(pixels), args.batch_size)])
    return ids, labels


def probe_pipeline(path: str, args) -> dict:
    pipeline = load_pipeline(path)
    token_ids, labels = real_tokens(pipeline, args)
    started = time.time()
    results = class_label_probe(pipeline.transformer, token_ids, labels, mask_ratios=args.mask_ratios,
                                widths=args.widths, batch_size=args.batch_size, seed=args.seed)
    return {"pipeline": path, "num_examples": len(labels), "num_classes": pipeline.transformer.config.num_classes,
            "seconds": time.time() - started, "results": results}


def write_results(probes: list[dict], args, started: float) -> None:
    docs = Path(args.docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    header = [
        "# Class conditioning probe", "",
        f"Written by `{args.command}` ({time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {(time.time() - started) / 60:.1f} min). The first "
        f"{args.num_examples} {args.split} examples through each pipeline's tokenizer, masked at each ratio (the "
        "same positions under every label); CE in nats per masked token under the true label, the mean over the "
        "wrong labels and the null class; label information = (null - true) nats summed over an example's masked "
        "tokens; label identification = examples whose true label scores below every other label.", "",
    ]
    sections = []
    for probe in probes:
        sections.append(f"## `{probe['pipeline']}` ({probe['num_classes']} classes: chance identification "
                        f"{100 / probe['num_classes']:.1f}%)\n\n" + format_probe_table(probe["results"]))
    write_with_notes(docs / f"{args.name}.md", header, "\n\n".join(sections))
    (docs / f"{args.name}.json").write_text(json.dumps({"command": args.command, "probes": probes}, indent=2))


def main(argv=None):
    args = parse_args(argv)
    args.command = " ".join(["python training/ablations/class_conditioning.py",
                             *(sys.argv[1:] if argv is None else argv)])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started, probes = time.time(), []
    for path in args.pipeline:
        probes.append(probe_pipeline(path, args))
        write_results(probes, args, started)  # after every pipeline: a stopped run keeps the finished ones
        print(f"## {path}\n" + format_probe_table(probes[-1]["results"]))


if __name__ == "__main__":
    main()
