"""Convert the Fashion-MNIST IDX files into a `datasets.DatasetDict` saved with `save_to_disk`.

    python training/prepare_fashion_mnist.py --output_dir data/fashion-mnist

Splits `train` (60,000) and `test` (10,000); columns `image` (28x28 grayscale PNG, a PIL image when
read) and `label` (`ClassLabel` with the 10 official class names). The source files come with the
Debian package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/*.gz`). Training scripts
then take `--dataset_name data/fashion-mnist`.
"""

from __future__ import annotations

import argparse

import datasets
from PIL import Image

from mgnt_hf.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_FILES, read_fashion_mnist


def build_fashion_mnist(source_dir: str = FASHION_MNIST_DIR, limit: int | None = None) -> datasets.DatasetDict:
    """Both splits as a `DatasetDict` (the first `limit` images per split if given)."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES))})
    splits = {}
    for split in FASHION_MNIST_FILES:
        images, labels = read_fashion_mnist(split, source_dir)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        splits[split] = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(image, mode="L") for image in images], "label": labels.tolist()},
            features=features,
        )
    return datasets.DatasetDict(splits)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="folder for save_to_disk (created)")
    parser.add_argument("--source_dir", default=FASHION_MNIST_DIR, help="folder with the IDX .gz files")
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N images per split (tests)")
    args = parser.parse_args(argv)
    dataset = build_fashion_mnist(args.source_dir, args.limit)
    dataset.save_to_disk(args.output_dir)
    print(f"saved {', '.join(f'{name}: {len(split)}' for name, split in dataset.items())} to {args.output_dir}")


if __name__ == "__main__":
    main()
