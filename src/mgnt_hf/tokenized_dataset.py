"""Tokenize an image (or video) dataset once with the VQ model and keep the tokens as a `datasets` Arrow dataset.

The transformer trains on token grids, never on pixels: encoding every image at every epoch
would cost more than the transformer step itself. The cache folder's name is a fingerprint of
everything the tokens depend on (the tokenizer's weights and config, the image preprocessing,
the source dataset's fingerprint, the flip augmentation), so a change to any of them misses the
cache and re-encodes, and an unchanged setting reuses it across runs. Writing goes to a
temporary folder renamed at the end: a cache folder is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from .modeling_vq import MGNTVQModel

logger = logging.getLogger(__name__)

TOKENS_COLUMN = "tokens"
LABEL_COLUMN = "label"
FLIPPED_COLUMN = "flipped"


def tokenizer_fingerprint(vqvae: MGNTVQModel) -> str:
    """SHA-256 of the tokenizer's config and weights (hex, 16 chars).

    The config's `_name_or_path` (where it was loaded from) is left out: the same tokenizer read from another
    folder makes the same tokens."""
    config = {k: v for k, v in vqvae.config.to_dict().items() if k != "_name_or_path"}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vqvae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def token_cache_key(vqvae: MGNTVQModel, dataset: datasets.Dataset, preprocessing: dict, flip: bool) -> str:
    """Cache key: tokenizer, source data, preprocessing and augmentation."""
    description = json.dumps({
        "tokenizer": tokenizer_fingerprint(vqvae),
        "dataset": dataset._fingerprint,
        "num_rows": len(dataset),
        "preprocessing": preprocessing,
        "flip": flip,
    }, sort_keys=True)
    return hashlib.sha256(description.encode()).hexdigest()[:16]


@torch.no_grad()
def tokenize_dataset(
    dataset: datasets.Dataset,
    vqvae: MGNTVQModel,
    pixel_transform: Callable,
    cache_dir: str | os.PathLike,
    preprocessing: dict,
    image_column: str = "image",
    label_column: str = "label",
    flip: bool = False,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    show_progress: bool = True,
    prepare: Callable[[datasets.Dataset], datasets.Dataset] | None = None,
) -> datasets.Dataset:
    """Token grids of every image of `dataset`, from the cache when the same setting was encoded before.

    Args:
        dataset: rows with an image column and an integer label column.
        vqvae: the tokenizer; its `encode` maps `[B, C, H, W]` in [-1, 1] to ids `[B, h, w]`.
        pixel_transform: one image (as stored in the dataset) -> tensor `[C, H, W]` in [-1, 1].
        cache_dir: folder that holds one sub-folder per cache key.
        preprocessing: a JSON-able description of `pixel_transform` (resolution, channels,
            padding...); part of the cache key, so describe everything that changes the pixels.
        flip: also store the tokens of every horizontally flipped image (a second row per image,
            `flipped=True`).
        prepare: run on `dataset` only when the cache misses, before encoding (e.g. checking and
            dropping bad images). The key is taken from `dataset` as given, so describe what
            `prepare` does in `preprocessing`.

    Returns:
        A dataset with columns `tokens` (`h * w` int16/int32 ids), `label` and `flipped`.
    """
    for column in (image_column, label_column):
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} not in the dataset; available: {dataset.column_names}")
    key = token_cache_key(vqvae, dataset, preprocessing, flip)
    cache_root = Path(cache_dir)
    target = cache_root / f"tokens-{key}"
    if (target / "dataset_info.json").exists():
        logger.info("token cache hit: reusing %s", target)
        return datasets.load_from_disk(str(target))
    logger.info("token cache miss: encoding %d images into %s", len(dataset), target)

    if prepare is not None:
        dataset = prepare(dataset)
    device = torch.device(device) if device is not None else vqvae.device
    vqvae = vqvae.to(device).eval()
    id_dtype = np.int16 if vqvae.config.codebook_size <= np.iinfo(np.int16).max else np.int32
    token_rows, labels, flipped = [], [], []
    batches = range(0, len(dataset), batch_size)
    for start in tqdm(batches, desc="tokenizing", disable=not show_progress):
        rows = dataset[start:start + batch_size]
        pixels = torch.stack([pixel_transform(image) for image in rows[image_column]]).to(device)
        variants = [(pixels, False)] + ([(pixels.flip(-1), True)] if flip else [])
        for batch_pixels, is_flipped in variants:
            ids = vqvae.encode(batch_pixels.to(vqvae.dtype)).reshape(len(batch_pixels), -1)
            token_rows.extend(ids.cpu().numpy().astype(id_dtype))
            labels.extend(int(label) for label in rows[label_column])
            flipped.extend([is_flipped] * len(batch_pixels))

    label_feature = dataset.features[label_column]
    if not isinstance(label_feature, datasets.ClassLabel):
        label_feature = datasets.Value("int64")
    features = datasets.Features({
        TOKENS_COLUMN: datasets.Sequence(datasets.Value("int16" if id_dtype == np.int16 else "int32")),
        LABEL_COLUMN: label_feature,
        FLIPPED_COLUMN: datasets.Value("bool"),
    })
    tokens = datasets.Dataset.from_dict(
        {TOKENS_COLUMN: token_rows, LABEL_COLUMN: labels, FLIPPED_COLUMN: flipped}, features=features)
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tokens-{key}-", dir=cache_root))
    try:
        tokens.save_to_disk(str(staging))
        with open(staging / "mgnt_token_cache.json", "w") as handle:
            json.dump({"key": key, "preprocessing": preprocessing, "flip": flip, "rows": len(tokens)}, handle)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "dataset_info.json").exists():  # not a concurrent writer of the same key
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(target))
