"""Loading and publishing MGNT pipelines: folder checks, Hub download, model cards, `push_to_hub`.

[`MGNTHubMixin`] is mixed into [`MGNTBasePipeline`], so the image and the video pipeline load, download, describe
and upload themselves the same way; each names its card template (`model_card.md`, `model_card_video.md`, found
with `mgnt_hf.resources.shipped`), its Hub pipeline tag and its tags.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .resources import shipped
from .weights import check_use_safetensors, check_weights_fit_config

# Files a pipeline folder needs, per component (model weights may be sharded: any *.safetensors).
COMPONENT_FILES = {
    "transformer": ("config.json", "*.safetensors"),
    "vqvae": ("config.json", "*.safetensors"),
    "scheduler": ("scheduler_config.json",),
}
# What `download` fetches from the Hub: configs, safetensors weights and the model card; never pickles or code.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.txt"]


def check_pipeline_folder(folder: str | os.PathLike, pipeline_name: str = "MGNTPipeline",
                          optional_components: tuple[str, ...] | list[str] = ("vqvae",)) -> None:
    """Raise `OSError` naming what is missing if `folder` is not a complete saved `pipeline_name` (the image and
    the video pipeline have the same components; `optional_components` may be saved as None)."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise OSError(f"{folder} is not a saved {pipeline_name}: model_index.json is missing")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as error:
        raise OSError(f"{index_path} is not valid JSON: {error}") from error
    missing = []
    for component, patterns in COMPONENT_FILES.items():
        entry = index.get(component)
        if entry is None or entry[0] is None:
            if component in optional_components:
                continue
            missing.append(f"model_index.json entry '{component}'")
            continue
        for pattern in patterns:
            if not any((folder / component).glob(pattern)):
                missing.append(f"{component}/{pattern}")
    if missing:
        raise OSError(f"incomplete {pipeline_name} folder {folder}: missing {', '.join(missing)}")


def resolve_torch_dtype(name: str, value):
    """A `torch_dtype`/`dtype` argument with dtype names (`"float16"`, `"torch.bfloat16"`) turned into the
    `torch.dtype` (diffusers would warn and load float32); a dict (per component) is resolved entry by entry.
    `ValueError` for anything that is not a floating dtype."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, dict):
        return {component: resolve_torch_dtype(name, entry) for component, entry in value.items()}
    if isinstance(value, str):
        dtype = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            return dtype
    raise ValueError(f"{name} must be a floating torch.dtype or its name (e.g. torch.float16, 'float16', 'bfloat16', "
                     f"'float32'), got {value!r}")


def _component_class(index_path: Path, component: str, entry, expected: type) -> type:
    """The class `model_index.json` names for `component`; `ValueError` unless it is `expected` (or a subclass)."""
    try:
        module_name, class_name = entry
        found = getattr(importlib.import_module(module_name), class_name)
    except (TypeError, ValueError, ImportError, AttributeError) as error:
        raise ValueError(f"{index_path} names {entry!r} as the {component}, which cannot be imported ({error}); "
                         f"allowed: a {expected.__module__}.{expected.__name__}") from error
    if not (isinstance(found, type) and issubclass(found, expected)):
        raise ValueError(f"{index_path} names {module_name}.{class_name} as the {component}; it must be a "
                         f"{expected.__name__} (or a subclass)")
    return found


class MGNTHubMixin:
    """`from_pretrained`, `download`, `create_model_card` and `push_to_hub` of the MGNT pipelines.

    Mixed in before `DiffusionPipeline` (whose loading and saving it wraps) into a pipeline with `transformer`,
    `vqvae` (optional) and `scheduler` components and a `labels` property; the subclass names its card.
    """

    component_classes: ClassVar[dict[str, type]]  # component name -> the class it must be; set by the pipeline
    model_card_template: ClassVar[str]  # a template name `mgnt_hf.resources.shipped` finds
    model_card_pipeline_tag: ClassVar[str | None] = None  # the Hub's task; None where the Hub has none that fits
    model_card_tags: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a saved pipeline folder or a Hub repo id, after [`check_saved_pipeline`]: a damaged or
        inconsistent folder raises (`OSError` for missing or unreadable files and missing weights, `ValueError` for a
        config that contradicts the weights or the other components) instead of loading random weights.

        Keyword arguments go to `DiffusionPipeline.from_pretrained` (e.g. `torch_dtype`, `revision`, `token`);
        `torch_dtype`/`dtype` may be names such as `"float16"`. Weights load from safetensors only
        (`use_safetensors=False` raises `ValueError`).
        """
        check_use_safetensors(kwargs.get("use_safetensors"))
        kwargs["use_safetensors"] = True
        for name in ("torch_dtype", "dtype"):
            if name in kwargs:
                kwargs[name] = resolve_torch_dtype(name, kwargs[name])
        path = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            looks_local = os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1 \
                or os.sep != "/" and os.sep in path
            try:
                validate_repo_id(path)
            except HFValidationError:
                looks_local = True
            if looks_local:
                raise OSError(f"no {cls.__name__} folder at {path!r} (and it is not a Hub repo id 'owner/name')")
            path = cls.download(path, **kwargs)
        cls.check_saved_pipeline(path, variant=kwargs.get("variant"))
        return super().from_pretrained(path, **kwargs)

    @classmethod
    def check_saved_pipeline(cls, folder: str | os.PathLike, variant: str | None = None) -> None:
        """Everything `from_pretrained` checks before it loads a saved pipeline folder, cheapest first:

        the files ([`check_pipeline_folder`]); that `model_index.json` names the right class for each component
        (`ValueError`); each component's config (its own validation); the pipeline's consistency checks across
        the configs ([`check_component_configs`], `ValueError`); and for each model that its safetensors weights
        fit its config exactly ([`mgnt_hf.weights.check_weights_fit_config`]: `OSError` naming a damaged file or
        the missing tensors, `ValueError` naming the config field and both values of a shape that disagrees).
        """
        folder = Path(folder)
        check_pipeline_folder(folder, cls.__name__, cls._optional_components)
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        classes = {}
        for component, expected in cls.component_classes.items():
            entry = index.get(component)
            if entry is None or entry[0] is None:  # an optional component saved as None
                continue
            classes[component] = _component_class(index_path, component, entry, expected)
        configs = {component: found.config_class.from_pretrained(folder / component)
                   for component, found in classes.items() if hasattr(found, "config_class")}
        cls.check_component_configs(configs["transformer"], configs.get("vqvae"))
        for component, config in configs.items():
            check_weights_fit_config(classes[component], config, folder / component, variant)

    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs) -> str:
        """Fetch a pipeline repo from the Hub (configs, safetensors, card) and return its local folder.

        Replaces diffusers' `download`, which treats the `mgnt_hf.*` module paths in `model_index.json` as
        custom-code files.
        """
        folder = snapshot_download(
            pretrained_model_name,
            allow_patterns=HUB_ALLOW_PATTERNS,
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
            revision=kwargs.get("revision"),
            local_files_only=bool(kwargs.get("local_files_only", False)),
            force_download=bool(kwargs.get("force_download", False)),
        )
        check_pipeline_folder(folder, cls.__name__, cls._optional_components)
        return folder

    def create_model_card(self, repo_id: str | None = None, license: str = "mit", metrics: dict | None = None,
                          datasets: list[str] | None = None) -> ModelCard:
        """The model card (README.md with YAML front matter) rendered from the pipeline's card template.

        Args:
            repo_id: the Hub repo the card describes (used in the usage snippet).
            license: SPDX-style license id of the weights.
            metrics: measured numbers to list, e.g. `{"FID (classifier features)": 12.3}`; omitted when None.
            datasets: Hub dataset ids the model was trained on.
        """
        config = self.transformer.config
        card_data = ModelCardData(
            library_name="mgnt_hf",
            license=license,
            pipeline_tag=self.model_card_pipeline_tag,
            tags=list(self.model_card_tags),
            datasets=datasets,
        )
        id2label = config.id2label if len(config.id2label or {}) == config.num_classes else None
        return ModelCard.from_template(
            card_data,
            template_path=str(shipped(self.model_card_template)),
            repo_id=repo_id or "path/to/pipeline",
            transformer=config,
            num_parameters=sum(p.numel() for p in self.transformer.parameters()),
            vqvae=None if self.vqvae is None else self.vqvae.config,
            scheduler=dict(self.scheduler.config),
            example_labels=list(sorted(self.labels)[:2]) if id2label else [0, 1][:config.num_classes],
            id2label=id2label,
            metrics=metrics,
            license=license,
        )

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                    token: str | None = None, create_pr: bool = False, license: str = "mit",
                    metrics: dict | None = None, datasets: list[str] | None = None, **kwargs) -> str:
        """Save the pipeline with an `mgnt_hf` model card (see `create_model_card`) and upload it to `repo_id`.

        Returns the commit URL. Extra keyword arguments go to `save_pretrained`.
        """
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, **kwargs)
            self.create_model_card(repo_id, license=license, metrics=metrics, datasets=datasets).save(
                os.path.join(folder, "README.md"))
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, create_pr=create_pr,
                                       commit_message=commit_message or f"Upload {type(self).__name__}")
        return str(commit)
