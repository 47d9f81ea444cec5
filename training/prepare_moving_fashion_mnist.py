"""Generate Moving Fashion-MNIST (the video stand-in) and save it with `save_to_disk`.

    python training/prepare_moving_fashion_mnist.py --output_dir data/moving-fashion-mnist \
        --num_train 10000 --num_test 1000

Videos: 16 grayscale 64x64 frames, two Fashion-MNIST items moving and bouncing; label = the class of
the first (full-intensity) item; see `mgnt_hf.moving_fashion_mnist`. Deterministic: the same
arguments give the same videos. Training scripts then take `--dataset_name data/moving-fashion-mnist`.
"""

from __future__ import annotations

import argparse

from mgnt_hf.data import FASHION_MNIST_DIR
from mgnt_hf.moving_fashion_mnist import build_moving_fashion_mnist


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="folder for save_to_disk (created)")
    parser.add_argument("--source_dir", default=FASHION_MNIST_DIR, help="folder with the Fashion-MNIST IDX .gz files")
    parser.add_argument("--num_train", type=int, default=10000)
    parser.add_argument("--num_test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--distractor_intensity", type=float, default=0.5)
    args = parser.parse_args(argv)
    dataset = build_moving_fashion_mnist({"train": args.num_train, "test": args.num_test}, seed=args.seed,
                                         num_frames=args.num_frames, size=args.size,
                                         distractor_intensity=args.distractor_intensity, source_dir=args.source_dir)
    dataset.save_to_disk(args.output_dir)
    print(f"saved {', '.join(f'{name}: {len(split)}' for name, split in dataset.items())} to {args.output_dir}")


if __name__ == "__main__":
    main()
