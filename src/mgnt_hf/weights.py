"""Saved weights are checked before they load: safetensors only, readable, complete, and shaped as the config says.

transformers' `from_pretrained` gives a tensor missing from the checkpoint a random initialisation (and logs a
table), raises a `RuntimeError` that names no config field when a shape disagrees, and lets safetensors' own error
for a truncated file through without the file's name. A pipeline that ships must never run on random weights, so
[`MGNTHubMixin.from_pretrained`] runs [`check_weights_fit_config`] on every model component's folder first: it
reads only the safetensors headers (names and shapes, no data) and compares them with the tensors the config
builds, on the meta device. Pickled weights (`pytorch_model.bin`) are never read: [`SafetensorsOnlyMixin`] makes
every mgnt_hf model load with `use_safetensors=True`.

Which config field a tensor's shape comes from is declared next to each model, in its
`config_fields_of_weights` (`modeling_mgnt.py`, `modeling_vq.py`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# How many tensor names an error lists before it says "and N more".
_LISTED_NAMES = 8


def _with_variant(name: str, variant: str | None) -> str:
    """transformers' naming of a variant's file: model.safetensors -> model.fp16.safetensors."""
    if variant is None:
        return name
    *stem, suffix = name.split(".")
    return ".".join([*stem, variant, suffix])


def _tensors(count: int) -> str:
    return f"{count} tensor" + ("" if count == 1 else "s")


def _listed(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_LISTED_NAMES])
    return shown + (f" and {len(names) - _LISTED_NAMES} more" if len(names) > _LISTED_NAMES else "")


def check_use_safetensors(use_safetensors) -> None:
    """`ValueError` for `use_safetensors=False`: mgnt_hf never unpickles weights."""
    if use_safetensors is not None and use_safetensors is not True:
        raise ValueError(f"use_safetensors={use_safetensors!r} is not allowed: mgnt_hf loads safetensors weights only "
                         "and never unpickles a pytorch_model.bin; pass use_safetensors=True or leave it out")


def weight_files(folder: str | os.PathLike, variant: str | None = None) -> list[Path]:
    """The safetensors files `from_pretrained` loads from `folder`: `model.safetensors`, or every shard named in
    `model.safetensors.index.json`. `OSError` naming what is missing (other files, pickles included, never count)."""
    folder = Path(folder)
    single, index = folder / _with_variant(WEIGHTS_NAME, variant), folder / _with_variant(WEIGHTS_INDEX_NAME, variant)
    if single.is_file():
        return [single]
    if not index.is_file():
        raise OSError(f"{folder} has no {single.name} (or {index.name} for sharded weights); mgnt_hf loads "
                      f"safetensors weights only and never a pickled pytorch_model.bin")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({folder / name for name in weight_map.values()})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise OSError(f"{index} is not a safetensors index (JSON with a 'weight_map'): {error}") from error
    absent = [shard.name for shard in shards if not shard.is_file()]
    if absent:
        raise OSError(f"{index} names weight files that are missing: {_listed(absent)}")
    return shards


def read_weight_shapes(files: list[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """`{tensor name: (shape, file)}` from the safetensors headers of `files` (no tensor data is read). `OSError`
    naming the file when one is empty, truncated or otherwise not safetensors."""
    shapes = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as weights:
                for name in weights.keys():
                    shapes[name] = (tuple(weights.get_slice(name).get_shape()), file)
        except SafetensorError as error:
            size = file.stat().st_size
            raise OSError(f"{file} ({size} bytes) is not a complete safetensors file ({error}); it is damaged or "
                          f"truncated: save or download it again") from error
    return shapes


def expected_weight_shapes(model_class, config) -> dict[str, tuple[int, ...]]:
    """`{tensor name: shape}` of everything `model_class(config)` saves, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = model_class(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _mismatch_error(model_class, config, folder: Path, mismatches: dict) -> ValueError:
    """The error for the tensors whose saved shape is not the config's (`{name: (saved, expected, file)}`): names
    the config field by the first entry of the model's `config_fields_of_weights` that explains a mismatch."""
    config_path = folder / "config.json"
    for pattern, field, value_of_shape in model_class.config_fields_of_weights:
        for name, (saved, expected, file) in mismatches.items():
            if re.fullmatch(pattern, name) and value_of_shape(saved) != value_of_shape(expected):
                return ValueError(
                    f"{config_path} does not fit its weights: {field} is {getattr(config, field)!r} there, but "
                    f"{file.name} was saved with {field} {value_of_shape(saved)} ({name} is {list(saved)}; the config "
                    f"needs {list(expected)}); correct the config or use the weights saved with it")
    name, (saved, expected, file) = next(iter(mismatches.items()))
    return ValueError(f"{config_path} does not fit its weights: {file.name} has {name} {list(saved)}, the config needs "
                      f"{list(expected)}; correct the config or use the weights saved with it")


def check_weights_fit_config(model_class, config, folder: str | os.PathLike, variant: str | None = None) -> None:
    """Raise before anything loads if the weights in `folder` cannot make `model_class(config)` exactly:

    - `OSError` naming the file when no safetensors weights are there, or a file is empty, truncated or damaged;
    - `ValueError` naming the config field and both values when a shape disagrees (e.g. `codebook_size`,
      `token_grid`, `num_classes`, `intermediate_size`);
    - `OSError` listing the tensors the config needs that the weights lack (e.g. `num_hidden_layers` larger than
      trained, a deleted tensor), or that the weights hold and the config does not use.
    """
    folder = Path(folder)
    saved = read_weight_shapes(weight_files(folder, variant))
    expected = expected_weight_shapes(model_class, config)
    mismatches = {name: (saved[name][0], shape, saved[name][1]) for name, shape in expected.items()
                  if name in saved and saved[name][0] != shape}
    if mismatches:
        raise _mismatch_error(model_class, config, folder, mismatches)
    missing = expected.keys() - saved.keys()
    if missing:
        raise OSError(f"the weights in {folder} lack {_tensors(len(missing))} that {folder / 'config.json'} needs: "
                      f"{_listed(missing)}; they would start random. The config does not match the weights (e.g. "
                      f"num_hidden_layers) or the file is incomplete: correct the config or save the model again")
    unexpected = saved.keys() - expected.keys()
    if unexpected:
        raise OSError(f"the weights in {folder} hold {_tensors(len(unexpected))} that {folder / 'config.json'} does "
                      f"not use: {_listed(unexpected)}; the config does not match the weights (e.g. num_hidden_layers): "
                      f"correct the config or save the model again")


class SafetensorsOnlyMixin:
    """Mixed in before `PreTrainedModel`: `from_pretrained` loads safetensors only (`use_safetensors=True`; False is
    refused), names the file when a local one is damaged, instead of safetensors' error without a file name, and
    refuses weights that do not make the model its config builds (tensors missing from the checkpoint, or left
    unused by it) instead of transformers' random initialisation of the missing ones. Tensors whose saved shape
    differs are re-initialised only when asked for (`ignore_mismatched_sizes=True`, e.g. another class count)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, use_safetensors: bool | None = None, **kwargs):
        check_use_safetensors(use_safetensors)
        folder = Path(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        if folder.is_dir():
            read_weight_shapes(weight_files(folder, kwargs.get("variant")))
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, use_safetensors=True,
                                              output_loading_info=True, **kwargs)
        for kind, verb in (("missing_keys", "lack"), ("unexpected_keys", "hold unused")):
            names = sorted(info.get(kind) or ())
            if names:
                raise OSError(f"the weights of {pretrained_model_name_or_path} {verb} {_tensors(len(names))} that "
                              f"its {cls.__name__} config {'needs' if kind == 'missing_keys' else 'does not build'}: "
                              f"{_listed(names)}; they would {'start random' if kind == 'missing_keys' else 'be lost'}."
                              " The config does not match the weights: correct it (or a from_pretrained override) "
                              "or use the weights saved with it")
        return (model, info) if wants_info else model
