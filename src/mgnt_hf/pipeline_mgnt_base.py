"""What the MGNT pipelines share: class labels -> token grids by MaskGIT decoding with nested widths and a KV cache.

[`MGNTPipeline`] (images, `pipeline_mgnt.py`) and [`MGNTVideoPipeline`] (videos, `pipeline_mgnt_video.py`) are
siblings on [`MGNTBasePipeline`], as diffusers' aMUSEd text-to-image, img2img and inpaint pipelines are: each has
its own `__call__` (their arguments and outputs differ), written as the steps defined here: `check_inputs`,
`prepare_timesteps`, `prepare_latents`, `decode_tokens`, `decode_pixels`.

Division of labour (diffusers style): `scheduling_mgnt.py` says which width runs at each step, when the cache is
rebuilt and how a step samples; `modeling_mgnt.py` runs the network and holds the cache; `modeling_vq.py` turns
token grids into pixels. This file owns the decode loop, guidance, batching and FLOP accounting; `hub_utils.py`
loading, model cards and publishing.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline

from .hub_utils import MGNTHubMixin
from .modeling_mgnt import MGNTKVCache, MGNTTransformer, count_forward_flops
from .modeling_vq import MGNTVQModel
from .scheduling_mgnt import MGNTScheduler, check_cache_refresh_interval
from .utils.checks import check_choice, check_finite_number, check_guidance_scale, check_positive_int

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# The most outputs one batch of a call decodes by default (`max_batch_size`). A step holds a few float32 tensors
# of N x codebook_size per output (the logits of both guidance branches, the guided logits, the sampler's noise):
# about 5 MB per output for 16x16 tokens and 1024 codes (an estimate from the shapes), so a batch of 256 needs
# roughly 1-2 GB; larger calls run batch after batch.
DEFAULT_MAX_BATCH_SIZE = 256


def count_decode_flops(config, decode_plan: list[tuple[float, bool, int]], guided: bool) -> int:
    """Transformer FLOPs of one output's decode, from `MGNTScheduler.decode_plan` (per step: width fraction, full
    pass, tokens run): `count_forward_flops` of every step, both guidance branches when `guided`. Equal to the
    `gflops_per_image * 1e9` a decode from a fully masked grid reports."""
    branches = 2 if guided else 1
    return sum(count_forward_flops(config, config.width_at(fraction), batch_size=branches,
                                   num_active_tokens=None if full_pass else num_run)
               for fraction, full_pass, num_run in decode_plan)


@dataclass
class _DecodeState:
    """What one decode carries from step to step besides the token grid."""

    labels: torch.LongTensor  # [B], the condition of each sample
    guided_labels: torch.LongTensor  # [2B]: the labels, then the null class (both guidance branches)
    num_masked_at_start: torch.LongTensor  # [B]; the mask schedule counts from each sample's own unknown tokens
    cache: MGNTKVCache | None = None
    cache_ids: torch.LongTensor | None = None  # the ids the cache last ran, [2B or B, N]; None until then
    last_full_pass_step: int | None = None
    # Known on the host while no callback has edited the grid (None after one): tokens of each sample still
    # masked before the current step, and those masked when the cache last ran (its active set now).
    host_masked: list[int] | None = None
    host_masked_at_cache: list[int] | None = None


class MGNTBasePipeline(MGNTHubMixin, DiffusionPipeline):
    r"""
    The shared part of [`MGNTPipeline`] and [`MGNTVideoPipeline`]: components, label names, the call-argument
    checks, the start grid and the MaskGIT decode loop with nested widths and a KV cache (docs/design.md, "KV
    cache" and "Width schedule and decoding"). Not a pipeline to call itself: it has no `__call__`.

    Components:
        transformer ([`MGNTTransformer`]): predicts logits over the codebook for masked tokens.
        vqvae ([`MGNTVQModel`], *optional*): decodes token grids to pixels. Without it only
            `output_type="latent"` works.
        scheduler ([`MGNTScheduler`]): width schedule, cache policy, mask schedule, temperatures, guidance.
    """

    model_cpu_offload_seq = "transformer->vqvae"
    _optional_components = ["vqvae"]
    component_classes: ClassVar[dict[str, type]] = {
        "transformer": MGNTTransformer, "vqvae": MGNTVQModel, "scheduler": MGNTScheduler}
    _callback_tensor_inputs = ["latents"]
    # How error messages name one output, the per-prompt argument and what the batch is counted from.
    output_name: ClassVar[str] = "image"
    num_per_prompt_name: ClassVar[str] = "num_images_per_prompt"
    prompts_name: ClassVar[str] = "labels"

    def __init__(self, transformer: MGNTTransformer, vqvae: MGNTVQModel | None, scheduler: MGNTScheduler):
        super().__init__()
        self.register_modules(transformer=transformer, vqvae=vqvae, scheduler=scheduler)
        # model_index.json names each component's module; record the pipeline's too, so a reader of a saved
        # folder knows what to import (`from_pretrained` itself does not need it).
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

    # ---------------------------------------------------------------- components and labels

    def check_components(self) -> None:
        """Raise `ValueError` if the components do not fit together ([`check_component_configs`])."""
        self.check_component_configs(self.transformer.config, None if self.vqvae is None else self.vqvae.config)

    @classmethod
    def check_component_configs(cls, transformer_config, vq_config) -> None:
        """Raise `ValueError` if the tokenizer and the transformer do not share codebook size and token grid (the
        configs alone: `from_pretrained` runs this before any weights load)."""
        if vq_config is None:
            return
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

    def enable_compiled_layers(self, mode: str = "default", backend: str | Callable = "inductor",
                               dynamic: bool | None = None) -> None:
        """Opt-in: `torch.compile` every transformer layer (`MGNTTransformer.compile_layers`, which says what it
        gives and costs); the decoded tokens do not change. `mode="reduce-overhead"` uses CUDA graphs on CUDA."""
        self.transformer.compile_layers(mode=mode, backend=backend, dynamic=dynamic)

    def extract_submodel(self, width: int, clip: bool = False):
        """A pipeline of this class around the nested sub-model of width `width` as a standalone transformer.

        The transformer is `transformer.extract_submodel(width)` (hidden size `width`, copies of the leading
        slices); the tokenizer is the same object as this pipeline's; the scheduler has the same settings with its
        width schedule re-expressed in the new hidden size (`MGNTScheduler.for_submodel`), so every step runs the
        width it ran before. A segment wider than `width` raises `ValueError` unless `clip=True`, which runs those
        steps at `width` instead (a cheaper decode than the original). Save it with `save_pretrained` or
        `push_to_hub` like any pipeline.
        """
        config = self.transformer.config
        width = config.check_width(width)
        if not isinstance(clip, bool):
            raise ValueError(f"clip must be True or False, got {clip!r}")
        transformer = self.transformer.extract_submodel(width)
        scheduler = self.scheduler.for_submodel(config.hidden_size, width, clip=clip)
        scheduler.step_widths(width, transformer.config.nested_widths)  # the converted schedule runs on it
        pipeline = type(self)(transformer=transformer, vqvae=self.vqvae, scheduler=scheduler)
        pipeline.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipeline

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
        """Class ids for an int (numpy integers too), a name, a list of them, or an integer tensor or numpy array;
        `ValueError` for anything else."""
        num_classes = self.transformer.config.num_classes
        names = self.labels
        allowed = f"integers in [0, {num_classes})" + (f" or names {sorted(names)}" if names else "")
        if isinstance(class_labels, torch.Tensor):
            if class_labels.dtype == torch.bool or class_labels.is_floating_point() or class_labels.is_complex() \
                    or class_labels.dim() > 1:
                raise ValueError(f"class_labels tensor must hold integers in one dimension ({allowed}), "
                                 f"got {class_labels.dtype} {list(class_labels.shape)}")
            items = class_labels.reshape(-1).tolist()
        elif isinstance(class_labels, np.ndarray):
            if not np.issubdtype(class_labels.dtype, np.integer) or class_labels.ndim > 1:
                raise ValueError(f"class_labels array must hold integers in one dimension ({allowed}), "
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

    # ---------------------------------------------------------------- the steps of a call

    def check_inputs(self, output_type: str, num_per_prompt: int, guidance_scale: float, use_cache: bool | None,
                     cache_refresh_interval: int | None | str, callback_on_step_end_tensor_inputs: list[str]) -> None:
        """The call arguments both pipelines take (`ValueError` naming the value and what is allowed).

        `num_per_prompt` is `num_images_per_prompt` or `num_videos_per_prompt`; `guidance_scale` as the call
        resolved it (the scheduler's when not given).
        """
        check_choice("output_type", output_type, OUTPUT_TYPES)
        if output_type != "latent" and self.vqvae is None:
            raise ValueError(f"output_type {output_type!r} needs a vqvae; this pipeline has none (allowed: 'latent')")
        check_positive_int(self.num_per_prompt_name, num_per_prompt)
        check_guidance_scale(guidance_scale)
        if use_cache is not None and not isinstance(use_cache, bool):
            raise ValueError(f"use_cache must be True, False or None (the scheduler's setting), got {use_cache!r}")
        if cache_refresh_interval != "scheduler":
            check_cache_refresh_interval(cache_refresh_interval)
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} are not allowed; "
                             f"allowed: {self._callback_tensor_inputs}")

    def check_generator(self, generator, batch_size: int) -> None:
        """`ValueError` unless `generator` is None, one `torch.Generator`, or a list of one per output."""
        if generator is None:
            return
        allowed = f"None, a torch.Generator or a list of one torch.Generator per {self.output_name}"
        generators = generator if isinstance(generator, (list, tuple)) else [generator]
        wrong = [item for item in generators if not isinstance(item, torch.Generator)]
        if wrong:
            raise ValueError(f"generator must be {allowed}, got {type(wrong[0]).__name__} {wrong[0]!r} (seed one with "
                             f"torch.Generator().manual_seed(seed))")
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for {batch_size} {self.output_name}s "
                             f"({self.prompts_name} x {self.num_per_prompt_name}); pass one per {self.output_name} "
                             f"or a single generator")

    # ---------------------------------------------------------------- compute budgets

    def planned_gflops_per_image(self, num_inference_steps: int | None = None, width_schedule=None,
                                 use_cache: bool | None = None, guidance_scale: float | None = None,
                                 cache_refresh_interval: int | None | str = "scheduler") -> float:
        """Transformer GFLOPs per output of a decode from a fully masked grid with these settings (None: the
        scheduler's), known without running it: what the output's `gflops_per_image` will say."""
        scheduler = MGNTScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps, width_schedule=width_schedule)
        guidance_scale = scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
        config = self.transformer.config
        plan = scheduler.decode_plan(config.num_grid_tokens, use_cache=use_cache,
                                     cache_refresh_interval=cache_refresh_interval)
        return count_decode_flops(config, plan, guided=guidance_scale != 1) / 1e9

    def budget_schedule(self, max_gflops_per_image: float, guidance_scale: float | None = None,
                        cache_refresh_interval: int | None | str = "scheduler") -> dict:
        """The entry of the scheduler's `budget_schedules` to run within `max_gflops_per_image`: of the entries whose
        planned GFLOPs/output (at this guidance scale) fit, the one of lowest measured classifier FID.

        `ValueError` when the pipeline has no table, or when no entry fits (naming the cheapest)."""
        check_finite_number("max_gflops_per_image", max_gflops_per_image, minimum=0, exclusive_minimum=True)
        entries = self.scheduler.config.budget_schedules
        how = ("make one with `mgnt search-schedule PIPELINE --budgets G1 G2 ...` (mgnt_hf.evaluation."
               "search_schedules + write_budget_schedules), or pass width_schedule / num_inference_steps instead")
        if not entries:
            raise ValueError(f"max_gflops_per_image needs the scheduler's budget_schedules table, and this pipeline "
                             f"has none; {how}")
        costed = [(self.planned_gflops_per_image(entry["num_inference_steps"], entry["width_schedule"],
                                                 entry["use_cache"], guidance_scale, cache_refresh_interval), entry)
                  for entry in entries]
        fitting = [(gflops, entry) for gflops, entry in costed if gflops <= max_gflops_per_image]
        if not fitting:
            cheapest = min(gflops for gflops, _ in costed)
            raise ValueError(f"max_gflops_per_image {max_gflops_per_image:g} is below the cheapest stored budget "
                             f"schedule ({cheapest:.4g} GFLOPs per {self.output_name}); allowed: >= {cheapest:.4g}, "
                             f"or {how}")
        return min(fitting, key=lambda item: (item[1]["classifier_fid"], item[0]))[1]

    def prepare_timesteps(self, num_inference_steps: int | None, width_schedule, device) -> list[int]:
        """Set the scheduler's steps for this call (at most one per grid token); return the width of each step."""
        config = self.transformer.config
        num_tokens = config.num_grid_tokens
        # A numpy integer becomes a Python int here: numpy arithmetic would wrap around in the schedule maths.
        if num_inference_steps is not None:
            num_inference_steps = check_positive_int("num_inference_steps", num_inference_steps)
        if num_inference_steps is not None and num_inference_steps > num_tokens:
            raise ValueError(f"num_inference_steps {num_inference_steps} exceeds the {num_tokens} grid tokens; "
                             f"allowed: 1..{num_tokens}")
        self.scheduler.set_timesteps(num_inference_steps, width_schedule=width_schedule, device=device)
        if self.scheduler.num_inference_steps > num_tokens:
            raise ValueError(f"the width schedule has {self.scheduler.num_inference_steps} steps but the grid only "
                             f"{num_tokens} tokens; allowed: 1..{num_tokens} steps")
        step_widths = self.scheduler.step_widths(config.hidden_size, config.nested_widths)
        self._num_timesteps = len(self.scheduler.timesteps)
        return step_widths

    def prepare_latents(self, latents, batch_size: int, device) -> torch.LongTensor:
        """`[B, N]` start grid: all masked, or the given `latents` (`[B, *token_grid]` or `[B, N]`, mask id where
        unknown). Also checks the grid a step callback returns."""
        config = self.transformer.config
        num_tokens = config.num_grid_tokens
        if latents is None:
            return torch.full((batch_size, num_tokens), config.mask_token_id, dtype=torch.long, device=device)
        grid_shape = (batch_size, *config.token_grid)
        if not isinstance(latents, torch.Tensor) or latents.dtype != torch.long \
                or tuple(latents.shape) not in (grid_shape, (batch_size, num_tokens)):
            raise ValueError(
                f"latents must be a LongTensor of token ids shaped {list(grid_shape)} or [{batch_size}, {num_tokens}] "
                f"({self.prompts_name} x {self.num_per_prompt_name} {self.output_name}s), got "
                f"{getattr(latents, 'dtype', type(latents).__name__)} {list(getattr(latents, 'shape', []))}"
            )
        if bool(((latents < 0) | (latents > config.mask_token_id)).any()):
            raise ValueError(f"latents must hold ids in [0, {config.codebook_size}] ({config.mask_token_id} = unknown)")
        return latents.reshape(batch_size, num_tokens).to(device)

    def decode_in_batches(
        self,
        labels: torch.LongTensor,
        tokens: torch.LongTensor | None,
        step_widths: list[int],
        generator,
        use_cache: bool,
        cache_refresh_interval: int | None | str,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs: list[str],
        max_batch_size: int,
        to_output: Callable[[torch.LongTensor], object],
    ) -> tuple[list, int, list[int | None], list[bool]]:
        """[`decode_tokens`] over consecutive batches of at most `max_batch_size` outputs, each turned into its
        output by `to_output(token_grids [b, *token_grid])` before the next batch starts: the transformer, the
        sampler and the tokenizer never hold more than one batch, so a call of any size needs the memory of one
        batch plus its outputs.

        `tokens` is the start grid `[B, N]`, or None for all masked (then made one batch at a time). With one
        generator per output (a list) every output's tokens are exactly those of a single batch of all (its pixels
        too, up to the float rounding of the tokenizer's convolutions, which varies with the batch size); one
        generator (or None) is drawn from batch after batch. The guidance scale starts at the call's value in every
        batch (a step callback may change it, and runs once per step of each batch).

        Returns `(outputs per batch, total_flops, widths_run, full_passes)`: per step, the width run (None where no
        batch had a token left) and whether any batch ran a full pass.
        """
        guidance_scale = self._guidance_scale
        outputs, total_flops, widths_run, full_passes = [], 0, None, None
        for start in range(0, labels.shape[0], max_batch_size):
            batch = slice(start, start + max_batch_size)
            batch_labels = labels[batch]
            batch_tokens = self.prepare_latents(None, batch_labels.shape[0], labels.device) if tokens is None \
                else tokens[batch]
            batch_generator = generator[batch] if isinstance(generator, (list, tuple)) else generator
            self._guidance_scale = guidance_scale
            batch_tokens, flops, batch_widths, batch_full_passes = self.decode_tokens(
                batch_labels, batch_tokens, step_widths, batch_generator, use_cache, cache_refresh_interval,
                callback_on_step_end, callback_on_step_end_tensor_inputs)
            outputs.append(to_output(batch_tokens.view(batch_labels.shape[0], *self.transformer.config.token_grid)))
            total_flops += flops
            if widths_run is None:
                widths_run, full_passes = batch_widths, batch_full_passes
            else:
                widths_run = [width if width is not None else other for width, other in zip(widths_run, batch_widths)]
                full_passes = [first or other for first, other in zip(full_passes, batch_full_passes)]
        return outputs, total_flops, widths_run, full_passes

    @staticmethod
    def join_batches(batches: list, output_type: str):
        """The outputs of [`decode_in_batches`]'s batches as one output: lists (`"pil"`) chained, arrays (`"np"`)
        and tensors (`"pt"`, `"latent"`) concatenated along the batch."""
        if output_type == "pil":
            return [item for batch in batches for item in batch]
        if output_type == "np":
            return np.concatenate(batches)
        return torch.cat(batches)

    def decode_tokens(
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
        """The MaskGIT decode loop with nested widths and the KV cache.

        Args:
            labels (`torch.LongTensor` `[B]`): the condition of each sample (may be the null class id).
            tokens (`torch.LongTensor` `[B, N]`): the start grid, mask id where unknown. Known ids are never
                masked again, and the mask schedule counts from each sample's own unknown tokens.
            step_widths: the width of each step (from `prepare_timesteps`, which set the scheduler's steps).
            generator, use_cache, cache_refresh_interval, callback_on_step_end,
                callback_on_step_end_tensor_inputs: as in `__call__`; `use_cache` already resolved to a bool.

        Guidance runs while `self.do_classifier_free_guidance` (read every step: a callback may change it).

        Returns:
            `(tokens [B, N], total_flops, widths_run, full_passes)`: the decoded grid, transformer FLOPs summed
            over every forward (both guidance branches), and per step the width run (None where nothing was left
            to decode) and whether it was a full pass.
        """
        mask_token_id = self.transformer.config.mask_token_id
        null_labels = torch.full_like(labels, self.transformer.config.null_class_id)
        num_masked_at_start = (tokens == mask_token_id).sum(dim=1)
        # The decode's one device read before the loop: every later count follows from the mask schedule, so the
        # steps need no host-device synchronisation (until a callback edits the grid).
        host_masked = num_masked_at_start.tolist()
        masked_counts = self.scheduler.masked_counts(host_masked)  # [T][B] on the host
        masked_after = torch.tensor(masked_counts, dtype=torch.long).to(tokens.device, non_blocking=True)
        state = _DecodeState(labels=labels, guided_labels=torch.cat([labels, null_labels]),
                             num_masked_at_start=num_masked_at_start, host_masked=host_masked)
        total_flops, widths_run, full_passes = 0, [], []

        with self.progress_bar(total=self._num_timesteps) as progress_bar:
            for step_index, timestep in enumerate(self.scheduler.timesteps):
                masked = tokens == mask_token_id
                # Nothing left to decode happens only with known tokens at the start or callback edits.
                if any(state.host_masked) if state.host_masked is not None else bool(masked.any()):
                    width = step_widths[step_index]
                    logits, active_positions, flops, full_pass = self._step_logits(
                        tokens, masked, state, step_index, width, use_cache, cache_refresh_interval)
                    total_flops += flops
                    widths_run.append(width)
                    full_passes.append(full_pass)
                    tokens = self.scheduler.step(  # the step's index is its timestep, known here without a read
                        logits, step_index, tokens, mask_token_id, num_masked_at_start=state.num_masked_at_start,
                        active_positions=active_positions, generator=generator,
                        num_masked_after=masked_after[step_index] if state.host_masked is not None else None,
                        check_positions=False,  # built from the mask by _step_logits
                    ).prev_sample
                    if state.host_masked is not None:
                        state.host_masked = masked_counts[step_index]
                    if callback_on_step_end is not None:
                        tokens = self._run_step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs,
                                                         step_index, timestep, tokens)
                        state.host_masked = state.host_masked_at_cache = None  # the callback may edit tokens
                else:
                    widths_run.append(None)
                    full_passes.append(False)
                progress_bar.update()
        return tokens, total_flops, widths_run, full_passes

    def _step_logits(self, tokens: torch.LongTensor, masked: torch.BoolTensor, state: _DecodeState, step_index: int,
                     width: int, use_cache: bool, cache_refresh_interval: int | None | str):
        """The transformer forward of one step and its guidance: `(logits, active_positions, flops, full_pass)`;
        `masked` `[B, N]` marks the tokens still unknown.

        The active tokens of a step are those still masked plus those whose id changed since the cache last saw
        them; a full pass (logits `[B, N, K]`, `active_positions` None) runs when the scheduler's cache policy asks
        for one, when there is no cache yet, or when samples have active sets of different sizes. Otherwise only
        the active tokens run against the cache (logits `[B, A, K]` at `active_positions` `[B, A]`).
        """
        transformer = self.transformer
        config = transformer.config
        batch_size = tokens.shape[0]
        guided = self.do_classifier_free_guidance
        model_ids = torch.cat([tokens, tokens]) if guided else tokens
        model_labels = state.guided_labels if guided else state.labels
        if use_cache and (state.cache is None or state.cache.batch_size != model_ids.shape[0]):
            state.cache, state.cache_ids = transformer.new_cache(model_ids.shape[0]), None

        active = masked if state.cache_ids is None else masked | (tokens != state.cache_ids[:batch_size])
        full_pass = self.scheduler.needs_full_pass(
            step_index, width, None if state.cache is None else state.cache.width, state.last_full_pass_step,
            use_cache=use_cache, cache_refresh_interval=cache_refresh_interval,
        ) or state.cache_ids is None
        if not full_pass:
            # The active tokens are those masked when the cache last ran (revealed since, or still masked).
            if state.host_masked_at_cache is not None:
                active_counts = state.host_masked_at_cache
            else:
                active_counts = active.sum(dim=1).tolist()
            full_pass = len(set(active_counts)) > 1  # active sets of different sizes: no common [B, A] shape
        if full_pass:
            logits = transformer(model_ids, model_labels, width=width, cache=state.cache,
                                 check_values=False).logits  # [B', N, K]
            active_positions = None
            flops = count_forward_flops(config, width, batch_size=model_ids.shape[0])
            state.last_full_pass_step = step_index
        else:
            num_active = active_counts[0]
            # Stable sort puts the active positions first, in grid order: [B, A] without a loop.
            active_positions = torch.argsort((~active).to(torch.int8), dim=1, stable=True)[:, :num_active]
            model_positions = torch.cat([active_positions, active_positions]) if guided else active_positions
            logits = transformer(model_ids, model_labels, width=width, cache=state.cache,
                                 active_positions=model_positions, check_values=False).logits  # [B', A, K]
            flops = count_forward_flops(config, width, batch_size=model_ids.shape[0], num_active_tokens=num_active)
        if use_cache:
            state.cache_ids = model_ids.clone()
            state.host_masked_at_cache = state.host_masked

        logits = logits.float()
        if guided:
            scale = self.scheduler.guidance_scale_at(step_index, self.guidance_scale)
            conditional, unconditional = logits.chunk(2)
            logits = torch.lerp(unconditional, conditional, scale)  # uncond + scale * (cond - uncond), one pass
        return logits, active_positions, flops, full_pass

    def _run_step_callback(self, callback_on_step_end, callback_on_step_end_tensor_inputs: list[str],
                           step_index: int, timestep, tokens: torch.LongTensor) -> torch.LongTensor:
        """Call `callback_on_step_end(pipe, step, timestep, callback_kwargs)` with the named tensors (`latents`: the
        token grid `[B, *token_grid]`); a returned `latents` replaces the grid. Returns the grid `[B, N]`."""
        batch_size = tokens.shape[0]
        latents = tokens.view(batch_size, *self.transformer.config.token_grid)
        tensors = {"latents": latents}
        callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
        callback_outputs = callback_on_step_end(self, step_index, timestep, callback_kwargs)
        if callback_outputs is None:
            callback_outputs = {}
        if not isinstance(callback_outputs, dict):
            raise ValueError(f"callback_on_step_end must return a dict (e.g. its callback_kwargs, or {{}}), got "
                             f"{type(callback_outputs).__name__} {callback_outputs!r}")
        latents = callback_outputs.pop("latents", latents)
        return self.prepare_latents(latents, batch_size, tokens.device)

    def decode_pixels(self, token_grids: torch.LongTensor) -> torch.Tensor:
        """Token grids -> float32 pixels in [0, 1] in the tokenizer's layout (`[B, C, H, W]`, videos
        `[B, C, T, H, W]`)."""
        pixels = self.vqvae.decode(token_grids)  # in [-1, 1]
        return (pixels.float() / 2 + 0.5).clamp(0, 1)
