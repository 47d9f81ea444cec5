"""MGNT pipeline: class labels -> token grids (MaskGIT decoding with nested widths and a KV cache) -> images.

Division of labour (diffusers style): `scheduling_mgnt.py` says which width runs at each step, when the
cache is rebuilt and how a step samples; `modeling_mgnt.py` runs the network and holds the cache;
`modeling_vq.py` turns token grids into pixels. This file owns the loop, guidance, batching, FLOP
accounting, output conversion, saving and publishing.
"""

from __future__ import annotations

import importlib.resources
import json
import numbers
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from huggingface_hub import HfApi, ModelCard, ModelCardData, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .modeling_mgnt import MGNTTransformer, count_forward_flops
from .modeling_vq import MGNTVQModel
from .scheduling_mgnt import MGNTScheduler, check_cache_refresh_interval

OUTPUT_TYPES = ("pil", "np", "pt", "latent")

# Files a pipeline folder needs, per component (model weights may be sharded: any *.safetensors).
_COMPONENT_FILES = {
    "transformer": ("config.json", "*.safetensors"),
    "vqvae": ("config.json", "*.safetensors"),
    "scheduler": ("scheduler_config.json",),
}
# What `download` fetches from the Hub: configs, safetensors weights and the model card; never pickles or code.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.txt"]


@dataclass
class MGNTPipelineOutput(BaseOutput):
    """
    Output of [`MGNTPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` `[B, H, W, C]` in [0, 1], `torch.Tensor` `[B, C, H, W]` in
            [0, 1], or token ids `torch.LongTensor` `[B, h, w]` for `output_type="latent"`).
        gflops_per_image (`float`): transformer GFLOPs (analytic `count_forward_flops`, 2 x multiply-adds) summed
            over the forwards that ran, both guidance branches included, divided by the number of images. The
            tokenizer's decode is not counted.
        widths (`list[int | None]`): the width each step ran at (None where no token was left to decode).
        full_passes (`list[bool]`): whether each step ran a full pass (True) or only its active tokens against
            the KV cache (False).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    gflops_per_image: float
    widths: list[int | None]
    full_passes: list[bool]


def _template_path() -> Path:
    """The model card template: shipped as package data if it is, else the repo checkout's `model_card.md`."""
    packaged = importlib.resources.files("mgnt_hf") / "model_card.md"
    if packaged.is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "model_card.md"
    if checkout.is_file():
        return checkout
    raise OSError(f"model card template not found: neither mgnt_hf/model_card.md (package data) nor {checkout}")


def check_pipeline_folder(folder: str | os.PathLike, pipeline_name: str = "MGNTPipeline") -> None:
    """Raise `OSError` naming what is missing if `folder` is not a complete saved `MGNTPipeline` (or subclass
    `pipeline_name`: the video pipeline has the same components)."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise OSError(f"{folder} is not a saved {pipeline_name}: model_index.json is missing")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as error:
        raise OSError(f"{index_path} is not valid JSON: {error}") from error
    missing = []
    for component, patterns in _COMPONENT_FILES.items():
        entry = index.get(component)
        if entry is None or entry[0] is None:
            if component in MGNTPipeline._optional_components:
                continue
            missing.append(f"model_index.json entry '{component}'")
            continue
        for pattern in patterns:
            if not any((folder / component).glob(pattern)):
                missing.append(f"{component}/{pattern}")
    if missing:
        raise OSError(f"incomplete {pipeline_name} folder {folder}: missing {', '.join(missing)}")


class MGNTPipeline(DiffusionPipeline):
    r"""
    Class-conditional image generation with MaGNeTS: MaskGIT parallel decoding whose steps run nested
    sub-models of growing width, with a KV cache for tokens already decoded (DESIGN §1).

    Components:
        transformer ([`MGNTTransformer`]): predicts logits over the codebook for masked tokens.
        vqvae ([`MGNTVQModel`], *optional*): decodes token grids to pixels. Without it only
            `output_type="latent"` works.
        scheduler ([`MGNTScheduler`]): width schedule, cache policy, mask schedule, temperatures, guidance.

    Load with `MGNTPipeline.from_pretrained(folder_or_repo_id)` (not `DiffusionPipeline.from_pretrained`,
    which looks the class up in diffusers).

    Example:

    ```python
    >>> import torch
    >>> from mgnt_hf import MGNTPipeline
    >>> pipe = MGNTPipeline.from_pretrained("pipelines/mgnt-fashion-mnist")
    >>> out = pipe(["sneaker", "bag"], num_images_per_prompt=2, generator=torch.manual_seed(0))
    >>> out.images[0].size, out.gflops_per_image
    ```
    """

    model_cpu_offload_seq = "transformer->vqvae"
    _optional_components = ["vqvae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, transformer: MGNTTransformer, vqvae: MGNTVQModel | None, scheduler: MGNTScheduler):
        super().__init__()
        self.register_modules(transformer=transformer, vqvae=vqvae, scheduler=scheduler)
        # model_index.json names each component's module; record the pipeline's too, so a reader of a saved
        # folder knows what to import (`MGNTPipeline.from_pretrained` itself does not need it).
        self.register_to_config(_module=type(self).__module__)
        self.check_components()
        self._guidance_scale = None
        self._num_timesteps = None

    # ---------------------------------------------------------------- properties read during a call

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance scale, read at every step (a step callback may change `_guidance_scale`)."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Both branches run unless the scale is exactly 1 (then the guided logits equal the conditional ones)."""
        return self._guidance_scale != 1

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    # ---------------------------------------------------------------- checks

    def check_components(self) -> None:
        """Raise `ValueError` if the tokenizer and the transformer do not share codebook size and token grid."""
        if self.vqvae is None:
            return
        transformer_config, vq_config = self.transformer.config, self.vqvae.config
        if transformer_config.codebook_size != vq_config.codebook_size:
            raise ValueError(
                f"the tokenizer has codebook_size {vq_config.codebook_size} but the transformer "
                f"{transformer_config.codebook_size}; they must be equal"
            )
        if tuple(transformer_config.token_grid) != tuple(vq_config.token_grid):
            raise ValueError(
                f"the tokenizer makes token grids {tuple(vq_config.token_grid)} but the transformer takes "
                f"{tuple(transformer_config.token_grid)}; they must be equal"
            )

    @property
    def labels(self) -> dict[str, int]:
        """Accepted label names (lower case) -> class id, from `transformer.config.id2label`. A name with
        comma-separated synonyms (ImageNet style) is also accepted by each synonym."""
        config = self.transformer.config
        id2label = config.id2label or {}
        if len(id2label) != config.num_classes:  # transformers' placeholder LABEL_0/LABEL_1 names
            return {}
        names: dict[str, int] = {}
        for class_id, name in sorted((int(k), v) for k, v in id2label.items()):
            for alias in [name, *name.split(",")]:
                names.setdefault(alias.strip().lower(), class_id)
        return names

    def get_label_ids(self, class_labels) -> list[int]:
        """Class ids for an int, a name, a list of them, or an integer tensor; `ValueError` for anything else."""
        num_classes = self.transformer.config.num_classes
        names = self.labels
        allowed = f"integers in [0, {num_classes})" + (f" or names {sorted(names)}" if names else "")
        if isinstance(class_labels, torch.Tensor):
            if class_labels.dtype == torch.bool or class_labels.is_floating_point() or class_labels.is_complex() \
                    or class_labels.dim() > 1:
                raise ValueError(f"class_labels tensor must hold integers in one dimension ({allowed}), "
                                 f"got {class_labels.dtype} {list(class_labels.shape)}")
            items = class_labels.reshape(-1).tolist()
        elif isinstance(class_labels, (list, tuple)):
            items = list(class_labels)
        else:
            items = [class_labels]
        if not items:
            raise ValueError(f"class_labels is empty; give at least one label ({allowed})")
        ids = []
        for label in items:
            if isinstance(label, str):
                if label.strip().lower() not in names:
                    raise ValueError(f"unknown class label name {label!r}; allowed: {allowed}")
                ids.append(names[label.strip().lower()])
            elif isinstance(label, numbers.Integral) and not isinstance(label, (bool, np.bool_)):
                if not 0 <= int(label) < num_classes:
                    raise ValueError(f"class label {int(label)} is out of range; allowed: {allowed}")
                ids.append(int(label))
            else:
                raise ValueError(f"class label {label!r} ({type(label).__name__}) is not allowed; allowed: {allowed}")
        return ids

    def _check_call_arguments(self, output_type, num_images_per_prompt, guidance_scale, use_cache,
                              cache_refresh_interval, callback_on_step_end_tensor_inputs):
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type {output_type!r}; allowed: {list(OUTPUT_TYPES)}")
        if output_type != "latent" and self.vqvae is None:
            raise ValueError(f"output_type {output_type!r} needs a vqvae; this pipeline has none (allowed: 'latent')")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
                or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
                or not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale!r}")
        if use_cache is not None and not isinstance(use_cache, bool):
            raise ValueError(f"use_cache must be True, False or None (the scheduler's setting), got {use_cache!r}")
        if cache_refresh_interval != "scheduler":
            check_cache_refresh_interval(cache_refresh_interval)
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} are not allowed; "
                             f"allowed: {self._callback_tensor_inputs}")

    def _initial_tokens(self, latents, batch_size: int, device) -> torch.LongTensor:
        """`[B, N]` start grid: all masked, or the given `latents` (mask id where unknown)."""
        config = self.transformer.config
        num_tokens = config.num_grid_tokens
        if latents is None:
            return torch.full((batch_size, num_tokens), config.mask_token_id, dtype=torch.long, device=device)
        grid_shape = (batch_size, *config.token_grid)
        if not isinstance(latents, torch.Tensor) or latents.dtype != torch.long \
                or tuple(latents.shape) not in (grid_shape, (batch_size, num_tokens)):
            raise ValueError(
                f"latents must be a LongTensor of token ids shaped {list(grid_shape)} or [{batch_size}, {num_tokens}] "
                f"(labels x num_images_per_prompt images), got {getattr(latents, 'dtype', type(latents).__name__)} "
                f"{list(getattr(latents, 'shape', []))}"
            )
        if bool(((latents < 0) | (latents > config.mask_token_id)).any()):
            raise ValueError(f"latents must hold ids in [0, {config.codebook_size}] ({config.mask_token_id} = unknown)")
        return latents.reshape(batch_size, num_tokens).to(device)

    # ---------------------------------------------------------------- generation

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        use_cache: bool | None = None,
        width_schedule: list | str | None = None,
        num_images_per_prompt: int = 1,
        latents: torch.LongTensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers convention)
        cache_refresh_interval: int | None | str = "scheduler",
    ) -> MGNTPipelineOutput | tuple:
        r"""
        Generate images of the given classes.

        Args:
            class_labels: an int, a label name from `transformer.config.id2label` (case-insensitive), a list of
                them, or an integer tensor. Ids must be in `[0, num_classes)`.
            num_inference_steps (`int`, *optional*): decoding steps `T`, at most the number of grid tokens; the
                scheduler's width schedule is stretched to it. Default: the width schedule's own total.
            guidance_scale (`float`, *optional*): classifier-free guidance `uncond + s * (cond - uncond)` on the
                logits; 1 turns it off (only the conditional branch runs). Default: the scheduler's. Shaped per
                step by the scheduler's `guidance_schedule`; a callback may change `pipe._guidance_scale`.
            generator: a `torch.Generator`, or a list with one per image (image i then equals a call for that
                image alone with generator i).
            output_type (`str`): `"pil"`, `"np"` (`[B, H, W, C]` in [0, 1]), `"pt"` (`[B, C, H, W]` in [0, 1]) or
                `"latent"` (token ids `[B, h, w]`).
            return_dict (`bool`): return [`MGNTPipelineOutput`], else `(images, gflops_per_image)`.
            use_cache (`bool`, *optional*): KV cache on/off; default the scheduler's `use_cache`.
            width_schedule (*optional*): segments `[[fraction, steps], ...]` or a preset name for this call.
            num_images_per_prompt (`int`): images per label; image `j` of label `i` is output `i * n + j`.
            latents (`torch.LongTensor` `[B, h, w]` or `[B, N]`, *optional*): start grid, `B` = labels x
                `num_images_per_prompt`, with the mask id (`codebook_size`) where unknown. The mask schedule
                counts from each image's own unknown tokens. If images start with different numbers of unknown
                tokens their active sets differ in size, and every step is then a full pass.
            callback_on_step_end: `callback(pipe, step, timestep, callback_kwargs) -> dict`, called after each
                step with the tensors named in `callback_on_step_end_tensor_inputs` (`latents`: the token grid
                `[B, h, w]`); a returned `latents` replaces the grid.
            cache_refresh_interval: `None` or a positive int (see [`MGNTScheduler`]); `"scheduler"` takes the
                scheduler's setting.

        KV cache (DESIGN §1): every step runs `transformer.forward(..., width=w)`. The active tokens of a step are
        those still masked plus those whose id changed since the cache last saw them (revealed at the previous
        step, or replaced by a callback); all others contribute cached keys/values. A full pass rebuilds the
        cache at the first step, when the width changes, at the refresh interval, when guidance is switched on
        or off (the batch changes), and when images have active sets of different sizes. Off: every step is a
        full pass, exactly MaskGIT. One cache of batch `2B` serves both guidance branches.

        Returns:
            [`MGNTPipelineOutput`] or a tuple `(images, gflops_per_image)`.
        """
        config = self.transformer.config
        self.check_components()
        guidance_scale = self.scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
        self._check_call_arguments(output_type, num_images_per_prompt, guidance_scale, use_cache,
                                   cache_refresh_interval, callback_on_step_end_tensor_inputs)
        if output_type != "latent" and self.vqvae.config.is_video:
            raise ValueError(f"output_type {output_type!r} of MGNTPipeline decodes images, but the tokenizer is a "
                             f"video tokenizer (num_frames={self.vqvae.config.num_frames}); use MGNTVideoPipeline, "
                             f"or output_type='latent'")
        use_cache = self.scheduler.config.use_cache if use_cache is None else use_cache
        device = self._execution_device

        labels = torch.tensor(self.get_label_ids(class_labels), device=device).repeat_interleave(num_images_per_prompt)
        batch_size = labels.shape[0]
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for {batch_size} images "
                             f"(labels x num_images_per_prompt); pass one per image or a single generator")
        step_widths = self._prepare_timesteps(num_inference_steps, width_schedule, device)
        self._guidance_scale = guidance_scale

        tokens = self._initial_tokens(latents, batch_size, device)  # [B, N]
        tokens, total_flops, widths_run, full_passes = self._decode_tokens(
            labels, tokens, step_widths, generator, use_cache, cache_refresh_interval, callback_on_step_end,
            callback_on_step_end_tensor_inputs)

        token_grids = tokens.view(batch_size, *config.token_grid)
        if output_type == "latent":
            images = token_grids
        else:
            pixels = self.vqvae.decode(token_grids)  # [B, C, H, W] in [-1, 1]
            images = (pixels.float() / 2 + 0.5).clamp(0, 1)
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)

        self.maybe_free_model_hooks()
        gflops_per_image = total_flops / 1e9 / batch_size
        if not return_dict:
            return images, gflops_per_image
        return MGNTPipelineOutput(images=images, gflops_per_image=gflops_per_image, widths=widths_run,
                                  full_passes=full_passes)

    def _prepare_timesteps(self, num_inference_steps: int | None, width_schedule, device) -> list[int]:
        """Set the scheduler's steps for this call (at most one per grid token); return the width of each step."""
        config = self.transformer.config
        num_tokens = config.num_grid_tokens
        if num_inference_steps is not None and not isinstance(num_inference_steps, bool) \
                and isinstance(num_inference_steps, int) and num_inference_steps > num_tokens:
            raise ValueError(f"num_inference_steps {num_inference_steps} exceeds the {num_tokens} grid tokens; "
                             f"allowed: 1..{num_tokens}")
        self.scheduler.set_timesteps(num_inference_steps, width_schedule=width_schedule, device=device)
        if self.scheduler.num_inference_steps > num_tokens:
            raise ValueError(f"the width schedule has {self.scheduler.num_inference_steps} steps but the grid only "
                             f"{num_tokens} tokens; allowed: 1..{num_tokens} steps")
        step_widths = self.scheduler.step_widths(config.hidden_size, config.nested_widths)
        self._num_timesteps = len(self.scheduler.timesteps)
        return step_widths

    def _decode_tokens(
        self,
        labels: torch.LongTensor,
        tokens: torch.LongTensor,
        step_widths: list[int],
        generator,
        use_cache: bool,
        cache_refresh_interval: int | None | str,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> tuple[torch.LongTensor, int, list[int | None], list[bool]]:
        """The MaskGIT decode loop with nested widths and the KV cache, shared by the image and video pipelines.

        Args:
            labels (`torch.LongTensor` `[B]`): the condition of each sample (may be the null class id).
            tokens (`torch.LongTensor` `[B, N]`): the start grid, mask id where unknown. Known ids are never
                masked again, and the mask schedule counts from each sample's own unknown tokens.
            step_widths: the width of each step (from `_prepare_timesteps`, which set the scheduler's steps).
            generator, use_cache, cache_refresh_interval, callback_on_step_end,
                callback_on_step_end_tensor_inputs: as in `__call__`; `use_cache` already resolved to a bool.

        Guidance runs while `self.do_classifier_free_guidance` (read every step: a callback may change it).

        Returns:
            `(tokens [B, N], total_flops, widths_run, full_passes)`: the decoded grid, transformer FLOPs summed
            over every forward (both guidance branches), and per step the width run (None where nothing was left
            to decode) and whether it was a full pass.
        """
        transformer = self.transformer
        config = transformer.config
        device = tokens.device
        batch_size = tokens.shape[0]
        guided_labels = torch.cat([labels, torch.full_like(labels, config.null_class_id)])  # [2B]: cond, then null
        num_masked_at_start = (tokens == config.mask_token_id).sum(dim=1)
        cache, cache_ids, last_full_pass_step = None, None, None  # cache_ids: the ids the cache last ran, [2B or B, N]
        total_flops, widths_run, full_passes = 0, [], []

        with self.progress_bar(total=self._num_timesteps) as progress_bar:
            for step_index, timestep in enumerate(self.scheduler.timesteps):
                width = step_widths[step_index]
                masked = tokens == config.mask_token_id
                if not bool(masked.any()):  # only possible with known tokens at the start or callback edits
                    widths_run.append(None)
                    full_passes.append(False)
                    progress_bar.update()
                    continue
                guided = self.do_classifier_free_guidance
                model_ids = torch.cat([tokens, tokens]) if guided else tokens
                model_labels = guided_labels if guided else labels
                if use_cache and (cache is None or cache.batch_size != model_ids.shape[0]):
                    cache, cache_ids = transformer.new_cache(model_ids.shape[0]), None

                # Active: still masked, or a different id from the one the cache holds keys/values for.
                active = masked if cache_ids is None else masked | (tokens != cache_ids[:batch_size])
                active_counts = active.sum(dim=1)
                full_pass = self.scheduler.needs_full_pass(
                    step_index, width, None if cache is None else cache.width, last_full_pass_step,
                    use_cache=use_cache, cache_refresh_interval=cache_refresh_interval,
                ) or cache_ids is None or not bool((active_counts == active_counts[0]).all())
                if full_pass:
                    logits = transformer(model_ids, model_labels, width=width, cache=cache).logits  # [B', N, K]
                    active_positions = None
                    total_flops += count_forward_flops(config, width, batch_size=model_ids.shape[0])
                    last_full_pass_step = step_index
                else:
                    num_active = int(active_counts[0])
                    # Stable sort puts the active positions first, in grid order: [B, A] without a loop.
                    active_positions = torch.argsort((~active).to(torch.int8), dim=1, stable=True)[:, :num_active]
                    model_positions = torch.cat([active_positions, active_positions]) if guided else active_positions
                    logits = transformer(model_ids, model_labels, width=width, cache=cache,
                                         active_positions=model_positions).logits  # [B', A, K]
                    total_flops += count_forward_flops(config, width, batch_size=model_ids.shape[0],
                                                       num_active_tokens=num_active)
                if use_cache:
                    cache_ids = model_ids.clone()
                widths_run.append(width)
                full_passes.append(full_pass)

                logits = logits.float()
                if guided:
                    scale = self.scheduler.guidance_scale_at(step_index, self.guidance_scale)
                    conditional, unconditional = logits.chunk(2)
                    logits = unconditional + scale * (conditional - unconditional)
                tokens = self.scheduler.step(
                    logits, timestep, tokens, config.mask_token_id, num_masked_at_start=num_masked_at_start,
                    active_positions=active_positions, generator=generator,
                ).prev_sample

                if callback_on_step_end is not None:
                    callback_kwargs = {}
                    latents = tokens.view(batch_size, *config.token_grid)
                    for name in callback_on_step_end_tensor_inputs:
                        callback_kwargs[name] = locals()[name]
                    callback_outputs = callback_on_step_end(self, step_index, timestep, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                    tokens = self._initial_tokens(latents, batch_size, device)
                progress_bar.update()
        return tokens, total_flops, widths_run, full_passes

    # ---------------------------------------------------------------- loading and publishing

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "MGNTPipeline":
        """Load from a saved pipeline folder or a Hub repo id (`OSError` if neither is found or it is incomplete).

        Keyword arguments go to `DiffusionPipeline.from_pretrained` (e.g. `torch_dtype`, `revision`, `token`).
        """
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            check_pipeline_folder(path, cls.__name__)
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
        custom-code files (HF_NOTES).
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
        check_pipeline_folder(folder, cls.__name__)
        return folder

    def create_model_card(self, repo_id: str | None = None, license: str = "mit", metrics: dict | None = None,
                          datasets: list[str] | None = None) -> ModelCard:
        """The model card (README.md with YAML front matter) rendered from the top-level `model_card.md`.

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
            pipeline_tag="unconditional-image-generation",
            tags=["mgnt_hf", "magnets", "maskgit", "class-conditional-image-generation", "nested-transformer",
                  "image-generation"],
            datasets=datasets,
        )
        scheduler_config = dict(self.scheduler.config)
        id2label = config.id2label if len(config.id2label or {}) == config.num_classes else None
        return ModelCard.from_template(
            card_data,
            template_path=str(_template_path()),
            repo_id=repo_id or "path/to/pipeline",
            transformer=config,
            num_parameters=sum(p.numel() for p in self.transformer.parameters()),
            vqvae=None if self.vqvae is None else self.vqvae.config,
            scheduler=scheduler_config,
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
