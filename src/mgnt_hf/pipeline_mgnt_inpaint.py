"""MGNT inpainting pipeline: an image, a mask and class labels -> the image with its masked tokens regenerated
(MaskGIT decoding with nested widths and a KV cache, as in generation).

Inpainting, outpainting (a mask on the border) and class swap (inpainting with another label) are one operation: the
image is encoded once by the tokenizer; every token whose footprint touches a white mask pixel is masked and decoded
again under the class label; every other token is the image's own token, never masked. The decode loop, the
call-argument checks and the FLOP accounting are [`MGNTBasePipeline`]'s (`pipeline_mgnt_base.py`), shared with the
generation pipelines, whose start grid with known tokens is what frame prediction uses too: the mask schedule counts
from each image's own number of tokens to regenerate. This file adds the image and mask inputs and their checks,
following diffusers' `AmusedInpaintPipeline` conventions (white = repaint, black = keep).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from .pipeline_mgnt import MGNTPipelineOutput, images_from_token_grids
from .pipeline_mgnt_base import DEFAULT_MAX_BATCH_SIZE, MGNTBasePipeline
from .resources import IMAGE_CARD_TEMPLATE
from .utils.checks import check_positive_int

# A mask pixel at or above this value is white (regenerate), below it black (keep): diffusers' mask binarisation.
MASK_THRESHOLD = 0.5


@dataclass
class MGNTInpaintPipelineOutput(MGNTPipelineOutput):
    """
    Output of [`MGNTInpaintPipeline`]: [`MGNTPipelineOutput`]'s fields, and

    Args:
        token_mask (`torch.BoolTensor` `[B, h, w]`): the tokens that were regenerated (True); every other token of
            output `i` is the tokenizer's encoding of its input image.
    """

    token_mask: torch.BoolTensor | None = None


class MGNTInpaintPipeline(MGNTBasePipeline):
    r"""
    Class-conditional image editing with MaGNeTS: inpainting, outpainting and class swap. The tokens under the
    white part of the mask are decoded again by the same MaskGIT decode with nested widths and a KV cache as
    [`MGNTPipeline`] (a sibling on [`MGNTBasePipeline`]); the others keep the image's tokens.

    Components (the same as [`MGNTPipeline`], so `MGNTInpaintPipeline(**pipe.components)` works):
        transformer ([`MGNTTransformer`]): predicts logits over the codebook for masked tokens.
        vqvae ([`MGNTVQModel`]): an image tokenizer; encodes the image and decodes the result (required).
        scheduler ([`MGNTScheduler`]): width schedule, cache policy, mask schedule, temperatures, guidance.

    Example:

    ```python
    >>> import numpy as np, torch
    >>> from mgnt_hf import MGNTInpaintPipeline, MGNTPipeline
    >>> pipe = MGNTPipeline.from_pretrained("pipelines/mgnt-fashion-mnist")
    >>> inpaint = MGNTInpaintPipeline(**pipe.components)
    >>> image = pipe("dress", generator=torch.manual_seed(0)).images[0]
    >>> mask = np.zeros((1, 32, 32, 1), dtype=np.float32); mask[:, 16:] = 1  # regenerate the lower half
    >>> out = inpaint(["dress", "trouser"], image, mask, generator=torch.manual_seed(1))
    ```
    """

    model_card_template = IMAGE_CARD_TEMPLATE
    model_card_pipeline_tag = "image-to-image"
    model_card_tags = ("mgnt_hf", "magnets", "maskgit", "inpainting", "class-conditional-image-generation",
                       "nested-transformer")

    # ---------------------------------------------------------------- checks

    def check_inputs(self, output_type, num_per_prompt, guidance_scale, use_cache, cache_refresh_interval,
                     callback_on_step_end_tensor_inputs) -> None:
        """[`MGNTBasePipeline.check_inputs`], and an image tokenizer to encode the image (for every output type)."""
        if self.vqvae is None:
            raise ValueError("MGNTInpaintPipeline needs a vqvae to encode the image; this pipeline has none")
        if self.vqvae.config.is_video:
            raise ValueError(f"MGNTInpaintPipeline edits images, but the tokenizer is a video tokenizer "
                             f"(num_frames={self.vqvae.config.num_frames})")
        super().check_inputs(output_type, num_per_prompt, guidance_scale, use_cache, cache_refresh_interval,
                             callback_on_step_end_tensor_inputs)

    def _layouts(self, is_mask: bool) -> str:
        """The accepted forms of `image` or `mask_image`, spelled out with this tokenizer's sizes."""
        config = self.vqvae.config
        channels, (height, width) = config.num_channels, config.resolution
        if is_mask:
            return (f"a PIL image of mode L or 1 of {width}x{height} (or a list of them), a numpy array "
                    f"[B, {height}, {width}, 1] or [B, {height}, {width}], or a torch tensor [B, 1, {height}, {width}] "
                    f"or [B, {height}, {width}], floats in [0, 1] or bool")
        mode = "L" if channels == 1 else "RGB"
        return (f"a PIL image of mode {mode} of {width}x{height} (or a list of them), a numpy array "
                f"[B, {height}, {width}, {channels}] or a torch tensor [B, {channels}, {height}, {width}], floats in "
                f"[0, 1]")

    def _pixel_batch(self, value, name: str, is_mask: bool) -> torch.Tensor:
        """`image` or `mask_image` in any accepted form -> float32 `[B, C, H, W]` in [0, 1] (`C` = 1 for masks),
        `ValueError` naming the accepted forms otherwise. Sizes are the tokenizer's resolution."""
        config = self.vqvae.config
        channels = 1 if is_mask else config.num_channels
        height, width = config.resolution
        layouts = self._layouts(is_mask)
        if isinstance(value, PIL.Image.Image):
            value = [value]
        if isinstance(value, (list, tuple)) and value and all(isinstance(item, PIL.Image.Image) for item in value):
            modes = ("L", "1") if is_mask else ("L",) if channels == 1 else ("RGB",)
            bad = [f"{item.mode} {item.width}x{item.height}" for item in value
                   if item.mode not in modes or item.size != (width, height)]
            if bad:
                hint = " (convert it with .convert('L'))" if is_mask or channels == 1 else " (.convert('RGB'))"
                raise ValueError(f"{name} must be {layouts}; got PIL image(s) {bad}{hint}")
            arrays = np.stack([np.asarray(item, dtype=np.float32) / (1.0 if item.mode == "1" else 255.0)
                               for item in value])  # [B, H, W] or [B, H, W, 3]
            pixels = torch.from_numpy(arrays.reshape(len(value), height, width, channels)).permute(0, 3, 1, 2)
        elif isinstance(value, np.ndarray):
            if is_mask and value.ndim == 3:
                value = value[..., None]
            if value.ndim != 4 or tuple(value.shape[1:]) != (height, width, channels):
                raise ValueError(f"{name} must be {layouts}; got a numpy array of shape {list(value.shape)}")
            pixels = self._float_pixels(torch.from_numpy(np.ascontiguousarray(value)), name, is_mask, layouts)
            pixels = pixels.permute(0, 3, 1, 2)
        elif isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if is_mask and value.dim() == 3:
                value = value[:, None]
            if value.dim() != 4 or tuple(value.shape[1:]) != (channels, height, width):
                raise ValueError(f"{name} must be {layouts}; got a torch tensor of shape {list(value.shape)}")
            pixels = self._float_pixels(value, name, is_mask, layouts)
        else:
            raise ValueError(f"{name} must be {layouts}; got {type(value).__name__}")
        if pixels.shape[0] == 0:
            raise ValueError(f"{name} holds no image; give at least one ({layouts})")
        return pixels.contiguous()

    @staticmethod
    def _float_pixels(pixels: torch.Tensor, name: str, is_mask: bool, layouts: str) -> torch.Tensor:
        """A float (or, for masks, bool) tensor with values in [0, 1] -> float32; `ValueError` otherwise."""
        if pixels.dtype == torch.bool and is_mask:
            return pixels.float()
        if not pixels.is_floating_point():
            raise ValueError(f"{name} must be {layouts}; got dtype {pixels.dtype}")
        pixels = pixels.float()
        if not bool(torch.isfinite(pixels).all()) or bool((pixels < 0).any()) or bool((pixels > 1).any()):
            finite = pixels[torch.isfinite(pixels)]
            found = f"[{finite.min().item():g}, {finite.max().item():g}]" if finite.numel() else "none finite"
            raise ValueError(f"{name} must hold values in [0, 1]; got values in {found}"
                             + ("" if finite.numel() == pixels.numel() else " and non-finite values"))
        return pixels

    def token_mask(self, mask_image) -> torch.BoolTensor:
        """`mask_image` (any accepted form) -> `[B, h, w]` tokens to regenerate: those whose footprint (the
        `f x f` pixels a token covers, `f` the tokenizer's downsampling factor) holds a white pixel (>= 0.5)."""
        mask = self._pixel_batch(mask_image, "mask_image", is_mask=True)  # [B, 1, H, W]
        factor = self.vqvae.config.downsample_factor
        white = (mask >= MASK_THRESHOLD).float()
        return F.max_pool2d(white, kernel_size=factor, stride=factor)[:, 0] > 0

    @staticmethod
    def _broadcast_count(num_labels: int, num_images: int, num_masks: int) -> int:
        """The number of prompts: labels, images and masks are each given once (shared) or once per prompt."""
        count = max(num_labels, num_images, num_masks)
        if any(given not in (1, count) for given in (num_labels, num_images, num_masks)):
            raise ValueError(f"got {num_labels} class labels, {num_images} images and {num_masks} masks; each must "
                             f"be 1 (shared by every prompt) or the same number as the others ({count})")
        return count

    # ---------------------------------------------------------------- editing

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        image: PIL.Image.Image | list[PIL.Image.Image] | np.ndarray | torch.Tensor,
        mask_image: PIL.Image.Image | list[PIL.Image.Image] | np.ndarray | torch.Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        use_cache: bool | None = None,
        width_schedule: list | str | None = None,
        num_images_per_prompt: int = 1,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers convention)
        cache_refresh_interval: int | None | str = "scheduler",
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> MGNTInpaintPipelineOutput | tuple:
        r"""
        Regenerate the masked part of images under class labels.

        Args:
            class_labels: an int, a label name from `transformer.config.id2label` (case-insensitive), a list of
                them, or an integer tensor; ids in `[0, num_classes)`. Another label than the image's is a class
                swap of the masked region.
            image: the images to edit, in [0, 1], at the tokenizer's resolution and channels: a PIL image (mode L
                for a one-channel tokenizer, RGB for three) or a list of them, a numpy array `[B, H, W, C]` (the
                `"np"` output layout) or a torch tensor `[B, C, H, W]` (the `"pt"` layout), floats.
            mask_image: what to regenerate, the same forms with one channel (or none: `[B, H, W]`), floats in
                [0, 1] or bool; white (>= 0.5) = regenerate, black = keep. A token is regenerated when any pixel of
                its footprint (`f x f` pixels, `f` the tokenizer's downsampling factor) is white. A border mask is
                outpainting. Labels, images and masks are each given once (shared) or once per prompt.
            num_inference_steps (`int`, *optional*): decoding steps, at most the number of grid tokens; the width
                schedule is stretched to it. The mask schedule runs over each image's own number of tokens to
                regenerate, so with few masked tokens the last steps may have nothing left (width None).
            guidance_scale, generator, output_type, return_dict, use_cache, width_schedule, num_images_per_prompt,
                callback_on_step_end, callback_on_step_end_tensor_inputs, cache_refresh_interval, max_batch_size: as
                in [`MGNTPipeline`] (`output_type="latent"` gives the token grids, the kept tokens unchanged).

        The kept tokens are `vqvae.encode(image)` exactly and are never masked (unless a step callback returns
        `latents` that change them), so the output image shows the tokenizer's reconstruction there (not the input
        pixels). With the KV cache they are never run by a cached step: they run only in the full passes that
        build the cache (the first step, each width change, the refresh interval). An all-black mask leaves nothing to regenerate: the output is the reconstruction
        `vqvae.decode(vqvae.encode(image))`, no transformer forward runs and `gflops_per_image` is 0. Images whose
        masks cover different numbers of tokens have active sets of different sizes, so every step of such a batch
        is a full pass (as in [`MGNTPipeline`] with such `latents`).

        Returns:
            [`MGNTInpaintPipelineOutput`] (`images`, `gflops_per_image`, `widths`, `full_passes`, `token_mask`) or a
            tuple `(images, gflops_per_image)`.
        """
        config = self.transformer.config
        self.check_components()
        guidance_scale = self.scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
        self.check_inputs(output_type, num_images_per_prompt, guidance_scale, use_cache, cache_refresh_interval,
                          callback_on_step_end_tensor_inputs)
        use_cache = self.scheduler.config.use_cache if use_cache is None else use_cache
        device = self._execution_device
        max_batch_size = check_positive_int("max_batch_size", max_batch_size)
        num_images_per_prompt = int(num_images_per_prompt)  # checked above; numpy integers become ints

        label_ids = self.get_label_ids(class_labels)
        pixels = self._pixel_batch(image, "image", is_mask=False)  # [Bi, C, H, W] in [0, 1]
        token_mask = self.token_mask(mask_image)  # [Bm, h, w]
        num_prompts = self._broadcast_count(len(label_ids), pixels.shape[0], token_mask.shape[0])
        batch_size = num_prompts * num_images_per_prompt
        self.check_generator(generator, batch_size)
        step_widths = self.prepare_timesteps(num_inference_steps, width_schedule, device)
        self._guidance_scale = guidance_scale

        image_tokens = self.vqvae.encode((pixels * 2 - 1).to(self.vqvae.device)).to(device)  # [Bi, h, w]
        labels = torch.tensor(label_ids, device=device).expand(num_prompts)
        image_tokens = image_tokens.expand(num_prompts, *config.token_grid)
        token_mask = token_mask.to(device).expand(num_prompts, *config.token_grid)
        labels, image_tokens, token_mask = (tensor.repeat_interleave(num_images_per_prompt, dim=0)
                                            for tensor in (labels, image_tokens, token_mask))
        tokens = image_tokens.masked_fill(token_mask, config.mask_token_id).view(batch_size, -1)  # [B, N]
        batches, total_flops, widths_run, full_passes = self.decode_in_batches(
            labels, tokens, step_widths, generator, use_cache, cache_refresh_interval, callback_on_step_end,
            callback_on_step_end_tensor_inputs, max_batch_size,
            partial(images_from_token_grids, self, output_type=output_type))
        images = self.join_batches(batches, output_type)
        self.maybe_free_model_hooks()
        gflops_per_image = total_flops / 1e9 / batch_size
        if not return_dict:
            return images, gflops_per_image
        return MGNTInpaintPipelineOutput(images=images, gflops_per_image=gflops_per_image, widths=widths_run,
                                         full_passes=full_passes, token_mask=token_mask)
