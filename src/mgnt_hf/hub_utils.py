"""Loading and publishing MGNT pipelines: folder checks, Hub download, model cards, `push_to_hub`.

[`MGNTHubMixin`] is mixed into [`MGNTBasePipeline`], so the image and the video pipeline load, download, describe
and upload themselves the same way; each names its card template (`model_card.md`, `model_card_video.md`, found
with `mgnt_hf.resources.shipped`), its Hub pipeline tag and its tags.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import ClassVar

from huggingface_hub import HfApi, ModelCard, ModelCardData, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .resources import shipped

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


class MGNTHubMixin:
    """`from_pretrained`, `download`, `create_model_card` and `push_to_hub` of the MGNT pipelines.

    Mixed in before `DiffusionPipeline` (whose loading and saving it wraps) into a pipeline with `transformer`,
    `vqvae` (optional) and `scheduler` components and a `labels` property; the subclass names its card.
    """

    model_card_template: ClassVar[str]  # a template name `mgnt_hf.resources.shipped` finds
    model_card_pipeline_tag: ClassVar[str | None] = None  # the Hub's task; None where the Hub has none that fits
    model_card_tags: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a saved pipeline folder or a Hub repo id (`OSError` if neither is found or it is incomplete).

        Keyword arguments go to `DiffusionPipeline.from_pretrained` (e.g. `torch_dtype`, `revision`, `token`).
        """
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            check_pipeline_folder(path, cls.__name__, cls._optional_components)
        else:
            looks_local = os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1 \
                or os.sep != "/" and os.sep in path
            try:
                validate_repo_id(path)
            except HFValidationError:
                looks_local = True
            if looks_local:
                raise OSError(f"no {cls.__name__} folder at {path!r} (and it is not a Hub repo id 'owner/name')")
        return super().from_pretrained(path, **kwargs)

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
