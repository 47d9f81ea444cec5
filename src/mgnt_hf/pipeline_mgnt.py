"""MGNT image pipeline: class labels -> token grids (MaskGIT decoding with nested widths and a KV cache) -> images.

The decode loop, the call-argument checks and the start grid are [`MGNTBasePipeline`]'s (`pipeline_mgnt_base.py`,
shared with the video pipeline); loading and publishing are `hub_utils.py`'s. This file adds what is particular to
images: the `__call__` signature, the output layouts and the model card (`model_card.md`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from .pipeline_mgnt_base import DEFAULT_MAX_BATCH_SIZE, MGNTBasePipeline
from .utils.checks import check_positive_int
from .resources import IMAGE_CARD_TEMPLATE


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


def images_from_token_grids(pipeline: MGNTBasePipeline, token_grids: torch.LongTensor, output_type: str):
    """Token grids `[B, h, w]` -> the image pipelines' outputs: the grids themselves for `"latent"`, else the
    tokenizer's decode as `"pt"` (`[B, C, H, W]` in [0, 1]), `"np"` (`[B, H, W, C]`) or `"pil"` (a list)."""
    if output_type == "latent":
        return token_grids
    images = pipeline.decode_pixels(token_grids)  # [B, C, H, W] in [0, 1]
    if output_type == "pt":
        return images
    images = images.cpu().permute(0, 2, 3, 1).numpy()
    return pipeline.numpy_to_pil(images) if output_type == "pil" else images


class MGNTPipeline(MGNTBasePipeline):
    r"""
    Class-conditional image generation with MaGNeTS: MaskGIT parallel decoding whose steps run nested
    sub-models of growing width, with a KV cache for tokens already decoded (docs/design.md,
    "Nesting" and "KV cache"). The decode loop is [`MGNTBasePipeline`]'s, shared with [`MGNTVideoPipeline`].

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

    model_card_template = IMAGE_CARD_TEMPLATE
    model_card_pipeline_tag = "unconditional-image-generation"
    model_card_tags = ("mgnt_hf", "magnets", "maskgit", "class-conditional-image-generation", "nested-transformer",
                       "image-generation")

    def check_inputs(self, output_type, num_per_prompt, guidance_scale, use_cache, cache_refresh_interval,
                     callback_on_step_end_tensor_inputs) -> None:
        """[`MGNTBasePipeline.check_inputs`], and pixels need an image tokenizer."""
        super().check_inputs(output_type, num_per_prompt, guidance_scale, use_cache, cache_refresh_interval,
                             callback_on_step_end_tensor_inputs)
        if output_type != "latent" and self.vqvae.config.is_video:
            raise ValueError(f"output_type {output_type!r} of MGNTPipeline decodes images, but the tokenizer is a "
                             f"video tokenizer (num_frames={self.vqvae.config.num_frames}); use MGNTVideoPipeline, "
                             f"or output_type='latent'")

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
        max_gflops_per_image: float | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> MGNTPipelineOutput | tuple:
        r"""
        Generate images of the given classes.

        Args:
            class_labels: an int (numpy integers too), a label name from `transformer.config.id2label`
                (case-insensitive), a list of them, or an integer tensor or numpy array. Ids must be in
                `[0, num_classes)`.
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
                step (of each batch, see `max_batch_size`) with the tensors named in
                `callback_on_step_end_tensor_inputs` (`latents`: the token grid `[b, h, w]` of the batch); a returned
                `latents` replaces the grid. Anything but a dict (or None) raises `ValueError`.
            cache_refresh_interval: `None` or a positive int (see [`MGNTScheduler`]); `"scheduler"` takes the
                scheduler's setting.
            max_gflops_per_image (`float`, *optional*): a compute budget instead of a schedule: run the entry of the
                scheduler's `budget_schedules` (the measured table of `mgnt search-schedule`) of lowest classifier
                FID among those that fit, so the output's `gflops_per_image` is at most this. Not combinable with
                `num_inference_steps`, `width_schedule` or `use_cache`. `ValueError` when the pipeline has no table
                or the budget is below its cheapest entry.
            max_batch_size (`int`): the most images decoded at once (transformer, sampler and tokenizer; default
                256, `DEFAULT_MAX_BATCH_SIZE`). A larger call runs in consecutive batches, so it needs the memory of
                one batch plus the outputs. With one generator per image the decoded tokens do not depend on it
                (pixels only by float rounding of the tokenizer); a single generator is drawn from batch after
                batch.

        KV cache (docs/design.md, "KV cache"): every step runs `transformer.forward(..., width=w)`. The active
        tokens of a step are those still masked plus those whose id changed since the cache last saw them (revealed
        at the previous step, or replaced by a callback); all others contribute cached keys/values. A full pass
        rebuilds the cache at the first step, when the width changes, at the refresh interval, when guidance is
        switched on or off (the batch changes), and when images have active sets of different sizes. Off: every
        step is a full pass, exactly MaskGIT. One cache of batch `2B` serves both guidance branches.

        Returns:
            [`MGNTPipelineOutput`] or a tuple `(images, gflops_per_image)`.
        """
        self.check_components()
        guidance_scale = self.scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
        self.check_inputs(output_type, num_images_per_prompt, guidance_scale, use_cache, cache_refresh_interval,
                          callback_on_step_end_tensor_inputs)
        if max_gflops_per_image is not None:
            given = [name for name, value in (("num_inference_steps", num_inference_steps),
                                              ("width_schedule", width_schedule), ("use_cache", use_cache))
                     if value is not None]
            if given:
                raise ValueError(f"max_gflops_per_image chooses the schedule; it cannot be combined with {given}")
            entry = self.budget_schedule(max_gflops_per_image, guidance_scale, cache_refresh_interval)
            num_inference_steps, width_schedule = entry["num_inference_steps"], entry["width_schedule"]
            use_cache = entry["use_cache"]
        use_cache = self.scheduler.config.use_cache if use_cache is None else use_cache
        device = self._execution_device

        max_batch_size = check_positive_int("max_batch_size", max_batch_size)
        num_images_per_prompt = int(num_images_per_prompt)  # checked above; numpy integers become ints

        labels = torch.tensor(self.get_label_ids(class_labels), device=device).repeat_interleave(num_images_per_prompt)
        batch_size = labels.shape[0]
        self.check_generator(generator, batch_size)
        step_widths = self.prepare_timesteps(num_inference_steps, width_schedule, device)
        self._guidance_scale = guidance_scale

        tokens = None if latents is None else self.prepare_latents(latents, batch_size, device)  # [B, N]
        batches, total_flops, widths_run, full_passes = self.decode_in_batches(
            labels, tokens, step_widths, generator, use_cache, cache_refresh_interval, callback_on_step_end,
            callback_on_step_end_tensor_inputs, max_batch_size,
            partial(images_from_token_grids, self, output_type=output_type))
        images = self.join_batches(batches, output_type)

        self.maybe_free_model_hooks()
        gflops_per_image = total_flops / 1e9 / batch_size
        if not return_dict:
            return images, gflops_per_image
        return MGNTPipelineOutput(images=images, gflops_per_image=gflops_per_image, widths=widths_run,
                                  full_passes=full_passes)
