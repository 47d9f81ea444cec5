"""MGNT video pipeline: class labels and/or context frames -> `[t, h, w]` token videos (the same MaskGIT decode
with nested widths and a KV cache as images) -> frames.

Two tasks (docs/design.md, "Video"): class-conditional generation (UCF101-like) and frame prediction
(Kinetics600-like), where the tokens of the given first frames are fixed and never masked. The decode loop, the
call-argument checks and the start grid are [`MGNTBasePipeline`]'s (`pipeline_mgnt_base.py`, shared with the image
pipeline [`MGNTPipeline`], a sibling); loading and publishing are `hub_utils.py`'s. This file adds what differs for
video: the context frames (checked, encoded once by the causal video tokenizer, placed in the start grid), the output
layouts of frames and the model card (`model_card_video.md`). `mgnt_hf.video_utils.export_to_video` writes one video
of the output to a file.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import partial

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from .pipeline_mgnt_base import DEFAULT_MAX_BATCH_SIZE, MGNTBasePipeline
from .utils.checks import check_positive_int
from .resources import VIDEO_CARD_TEMPLATE


@dataclass
class MGNTVideoPipelineOutput(BaseOutput):
    """
    Output of [`MGNTVideoPipeline`].

    Args:
        frames (`np.ndarray` `[B, T, H, W, C]` in [0, 1], `torch.Tensor` `[B, T, C, H, W]` in [0, 1], a list (per
            video) of lists of `PIL.Image.Image` frames, or token ids `torch.LongTensor` `[B, t, h, w]` for
            `output_type="latent"`): every frame of each video, the context frames included (as the tokenizer
            reconstructs them from their tokens).
        gflops_per_video (`float`): transformer GFLOPs (analytic `count_forward_flops`, 2 x multiply-adds) summed
            over the forwards that ran, both guidance branches included, divided by the number of videos. Neither
            the tokenizer's encode of the context nor its decode is counted.
        widths (`list[int | None]`): the width each step ran at (None where no token was left to decode).
        full_passes (`list[bool]`): whether each step ran a full pass (True) or only its active tokens against
            the KV cache (False).
        num_context_frames (`int`): `Tc`, the number of given context frames at the start of each video (0 for
            class-conditional generation).
    """

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]]
    gflops_per_video: float
    widths: list[int | None]
    full_passes: list[bool]
    num_context_frames: int


class MGNTVideoPipeline(MGNTBasePipeline):
    r"""
    Video generation with MaGNeTS: class-conditional generation and frame prediction. The same MaskGIT decode
    with nested widths and a KV cache as [`MGNTPipeline`], over `[t, h, w]` token grids (sequence order: time,
    then rows, then columns).

    Components (as [`MGNTPipeline`]):
        transformer ([`MGNTTransformer`]): with a 3-entry `token_grid` `(t, h, w)`.
        vqvae ([`MGNTVQModel`], *optional*): a video tokenizer (`config.num_frames` set) with the same token grid
            and codebook. Without it only class-conditional `output_type="latent"` works.
        scheduler ([`MGNTScheduler`]): width schedule, cache policy, mask schedule, temperatures, guidance.

    Frame prediction encodes the context frames once; the tokenizer is causal in time, so the first `Tc / ft`
    latent frames of a clip depend only on its first `Tc` frames and those tokens can be fixed while the rest of
    the grid is decoded.

    Example:

    ```python
    >>> import torch
    >>> from mgnt_hf import MGNTVideoPipeline, export_to_video
    >>> pipe = MGNTVideoPipeline.from_pretrained("path/to/video-pipeline")
    >>> out = pipe([0, 1], generator=torch.manual_seed(0))  # frames [2, T, H, W, C] in [0, 1]
    >>> export_to_video(out.frames[0], "class0.mp4")
    >>> context = torch.from_numpy(out.frames[:, :4]).permute(0, 1, 4, 2, 3)  # [2, 4, C, H, W]
    >>> predicted = pipe(context_frames=context, generator=torch.manual_seed(1))
    ```
    """

    model_card_template = VIDEO_CARD_TEMPLATE
    model_card_pipeline_tag = None  # the Hub has no task for class-conditional video generation or frame prediction
    model_card_tags = ("mgnt_hf", "magnets", "maskgit", "video-generation", "frame-prediction",
                       "class-conditional-video-generation", "nested-transformer")
    output_name = "video"
    num_per_prompt_name = "num_videos_per_prompt"
    prompts_name = "prompts"

    # ---------------------------------------------------------------- checks

    @classmethod
    def check_component_configs(cls, transformer_config, vq_config) -> None:
        """`ValueError` unless the transformer takes `(t, h, w)` grids and the tokenizer (if any) is a video
        tokenizer; then the codebook and token grid checks of [`MGNTBasePipeline`]."""
        token_grid = tuple(transformer_config.token_grid)
        tokenizer_is_video = vq_config is None or vq_config.is_video
        if len(token_grid) != 3 or not tokenizer_is_video:
            tokenizer = "no" if vq_config is None else "a video" if tokenizer_is_video else "an image"
            raise ValueError(
                f"MGNTVideoPipeline needs a video tokenizer (vqvae.config.is_video: num_frames set) and a transformer "
                f"with a 3-entry token_grid (t, h, w); got {tokenizer} tokenizer and token_grid {token_grid}"
            )
        super().check_component_configs(transformer_config, vq_config)

    def _check_prompts(self, class_labels, context_frames, latents) -> None:
        """What a call asks for: labels, context frames or both; a start grid only without context."""
        if class_labels is None and context_frames is None:
            raise ValueError("give class_labels (class-conditional generation), context_frames (frame prediction) "
                             "or both")
        if latents is not None and context_frames is not None:
            raise ValueError("latents and context_frames cannot be combined: the context fixes the first latent "
                             "frames itself; pass one or the other")
        if context_frames is not None and self.vqvae is None:
            raise ValueError("context_frames need a vqvae to encode them; this pipeline has none")

    def _resolve_guidance_scale(self, class_labels, guidance_scale) -> float:
        """The call's guidance scale: the scheduler's when not given; 1 (off) without class labels."""
        if class_labels is not None:
            return self.scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
        # The condition is the null class; guidance against the same null branch would change nothing.
        if guidance_scale is not None and not (isinstance(guidance_scale, numbers.Real) and guidance_scale == 1):
            raise ValueError(f"guidance_scale {guidance_scale!r} needs class_labels: without them the condition "
                             f"is the null class and guidance is off; pass guidance_scale=None or 1")
        return 1.0

    def _prompt_labels(self, class_labels, context_pixels: torch.Tensor | None, device) -> torch.LongTensor:
        """`[P]` class ids, one per prompt: the given labels, or the null class for each context video."""
        if class_labels is None:
            return torch.full((context_pixels.shape[0],), self.transformer.config.null_class_id, device=device)
        labels = torch.tensor(self.get_label_ids(class_labels), device=device)
        if context_pixels is not None and labels.shape[0] != context_pixels.shape[0]:
            raise ValueError(f"got {labels.shape[0]} class labels for {context_pixels.shape[0]} context videos; "
                             f"give one label per context video, or class_labels=None")
        return labels

    def _context_start_grid(self, context_pixels: torch.Tensor, num_videos_per_prompt: int,
                            device) -> torch.LongTensor:
        """`[B, N]` start grid of frame prediction: the context's tokens (encoded once) in its first latent frames,
        the mask id everywhere else (time-major order: the context's tokens come first)."""
        config = self.transformer.config
        context_ids = self.vqvae.encode(context_pixels.to(self.vqvae.device)).to(device)  # [Bc, Tc/ft, h, w]
        batch_size = context_ids.shape[0] * num_videos_per_prompt
        tokens = torch.full((batch_size, *config.token_grid), config.mask_token_id, dtype=torch.long, device=device)
        tokens[:, : context_ids.shape[1]] = context_ids.repeat_interleave(num_videos_per_prompt, dim=0)
        return tokens.view(batch_size, -1)

    def _context_layouts(self) -> dict[str, str]:
        """The accepted context shapes, spelled out with this tokenizer's sizes (for error messages)."""
        config = self.vqvae.config
        channels, (height, width) = config.num_channels, config.resolution
        mode = "L" if channels == 1 else "RGB"
        return {
            "pt": f"[B, Tc, {channels}, {height}, {width}]",
            "np": f"[B, Tc, {height}, {width}, {channels}]",
            "pil": f"a list (one per video) of lists of Tc {mode} PIL frames of {width}x{height}",
        }

    def _context_pixels(self, context_frames) -> torch.Tensor:
        """Check `context_frames` (any accepted layout) -> `[B, C, Tc, H, W]` float32 in `[-1, 1]`, the tokenizer's
        input layout. `ValueError` naming the expected shape for anything else."""
        config = self.vqvae.config
        channels, (height, width) = config.num_channels, config.resolution
        frames_per_latent, num_frames = config.temporal_downsample_factor, config.num_frames
        layouts = self._context_layouts()
        allowed_frames = (f"with Tc a multiple of {frames_per_latent} in {frames_per_latent}.."
                          f"{num_frames - frames_per_latent}" if num_frames > frames_per_latent else
                          f"(no context fits: the tokenizer's {num_frames} frames are a single latent frame)")

        if isinstance(context_frames, torch.Tensor):
            layout, frames = "pt", context_frames.detach().cpu()
            if frames.dim() == 5:
                frames = frames.permute(0, 1, 3, 4, 2)  # -> [B, Tc, H, W, C], checked below with numpy's layout
            got = list(context_frames.shape)
            dtype = frames.dtype
            frames = frames.numpy() if dtype != torch.bfloat16 else frames.float().numpy()
            is_uint8, is_float = dtype == torch.uint8, dtype.is_floating_point
        elif isinstance(context_frames, np.ndarray):
            layout, frames, got = "np", context_frames, list(context_frames.shape)
            is_uint8, is_float = frames.dtype == np.uint8, np.issubdtype(frames.dtype, np.floating)
        elif isinstance(context_frames, (list, tuple)):
            layout = "pil"
            frames, got = self._stack_pil_context(context_frames, f"{layouts['pil']} {allowed_frames}")
            is_uint8, is_float = True, False
        else:
            raise ValueError(f"context_frames must be a torch tensor {layouts['pt']}, a numpy array {layouts['np']} "
                             f"or {layouts['pil']}; got {type(context_frames).__name__}")

        if not (is_uint8 or is_float):
            raise ValueError(f"context_frames must hold floats in [0, 1] or uint8 in [0, 255], got dtype "
                             f"{getattr(context_frames, 'dtype', None)}")
        fits = frames.ndim == 5 and frames.shape[0] >= 1 and tuple(frames.shape[2:]) == (height, width, channels) \
            and 0 < frames.shape[1] < num_frames and frames.shape[1] % frames_per_latent == 0
        if not fits:
            raise ValueError(f"context_frames must be {layouts[layout]} {allowed_frames}, got {got}")
        if is_uint8:
            pixels = frames.astype(np.float32) / 255.0
        else:
            pixels = frames.astype(np.float32)
            if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
                raise ValueError(f"context_frames must hold values in [0, 1] (floats), got values in "
                                 f"[{np.nanmin(pixels):g}, {np.nanmax(pixels):g}]")
        pixels = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 4, 1, 2, 3)  # [B, C, Tc, H, W]
        return pixels * 2 - 1

    @staticmethod
    def _stack_pil_context(context_frames, expected: str) -> tuple[np.ndarray, list]:
        """A list of lists of PIL frames -> uint8 `[B, Tc, H, W, C]` (as given; sizes are checked by the caller)
        and a description of what was given."""
        if not context_frames or not all(isinstance(video, (list, tuple)) and video for video in context_frames):
            raise ValueError(f"context_frames must be {expected}, got {type(context_frames).__name__} of "
                             f"{[type(video).__name__ for video in context_frames]}")
        lengths = [len(video) for video in context_frames]
        frames = [frame for video in context_frames for frame in video]
        if not all(isinstance(frame, PIL.Image.Image) for frame in frames):
            raise ValueError(f"context_frames must be {expected}, got a frame of type "
                             f"{next(type(f).__name__ for f in frames if not isinstance(f, PIL.Image.Image))}")
        kinds = sorted({f"{frame.mode} {frame.width}x{frame.height}" for frame in frames})
        got = f"{len(context_frames)} videos of {lengths} frames ({', '.join(kinds)})"
        if len(set(lengths)) != 1 or len(kinds) != 1 or frames[0].mode not in ("L", "RGB"):
            raise ValueError(f"context_frames must be {expected}, got {got}")
        arrays = np.stack([np.asarray(frame) for frame in frames])  # [B*Tc, H, W] or [B*Tc, H, W, 3]
        if arrays.ndim == 3:
            arrays = arrays[..., None]
        shaped = arrays.reshape(len(context_frames), lengths[0], *arrays.shape[1:])
        return shaped, got

    # ---------------------------------------------------------------- generation

    def _to_output(self, token_videos: torch.LongTensor, output_type: str):
        """Token videos `[b, t, h, w]` -> videos of `output_type` (for one batch of a call)."""
        if output_type == "latent":
            return token_videos
        frames = self.decode_pixels(token_videos).permute(0, 2, 1, 3, 4)  # [b, T, C, H, W] in [0, 1]
        if output_type == "pt":
            return frames
        frames = frames.cpu().permute(0, 1, 3, 4, 2).numpy()  # [b, T, H, W, C]
        return [self.numpy_to_pil(video) for video in frames] if output_type == "pil" else frames

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        context_frames: torch.Tensor | np.ndarray | list[list[PIL.Image.Image]] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        use_cache: bool | None = None,
        width_schedule: list | str | None = None,
        num_videos_per_prompt: int = 1,
        latents: torch.LongTensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers convention)
        cache_refresh_interval: int | None | str = "scheduler",
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> MGNTVideoPipelineOutput | tuple:
        r"""
        Generate videos of the given classes, or predict the rest of videos from their first frames.

        Args:
            class_labels (*optional*): an int, a label name from `transformer.config.id2label`, a list of them, or
                an integer tensor or numpy array; ids in `[0, num_classes)`. With `context_frames`: None (the null class is the
                condition and guidance is off) or one label per context video.
            context_frames (*optional*): the first `Tc` frames of each video, in [0, 1]: a torch tensor
                `[B, Tc, C, H, W]` (the `"pt"` output layout), a numpy array `[B, Tc, H, W, C]` (the `"np"`
                layout; uint8 in [0, 255] is scaled) or a list (per video) of lists of PIL frames. `Tc` is a
                positive multiple of the tokenizer's `temporal_downsample_factor` `ft`, below its `num_frames`;
                `(H, W)` its `resolution`, `C` its `num_channels`. Encoded once; the `Tc / ft` latent frames'
                tokens are never masked, so the decode keeps them exactly and, with the KV cache, never runs them
                again after the first full pass.
            num_inference_steps (`int`, *optional*): decoding steps, at most the number of grid tokens. Default:
                the width schedule's own total.
            guidance_scale (`float`, *optional*): classifier-free guidance scale (1 = off); default the
                scheduler's. Needs `class_labels` (without them only 1 or None is accepted).
            generator: a `torch.Generator`, or a list with one per video (video i then equals a call for that
                video alone with generator i).
            output_type (`str`): `"np"` (`[B, T, H, W, C]` float32 in [0, 1]), `"pil"` (a list per video of PIL
                frames), `"pt"` (`[B, T, C, H, W]` in [0, 1]) or `"latent"` (token ids `[B, t, h, w]`).
            return_dict (`bool`): return [`MGNTVideoPipelineOutput`], else `(frames, gflops_per_video)`.
            use_cache (`bool`, *optional*): KV cache on/off; default the scheduler's `use_cache`.
            width_schedule (*optional*): segments `[[fraction, steps], ...]` or a preset name for this call.
            num_videos_per_prompt (`int`): videos per label (and per context video); video `j` of prompt `i` is
                output `i * n + j`.
            latents (`torch.LongTensor` `[B, t, h, w]` or `[B, N]`, *optional*): start grid for class-conditional
                calls, mask id (`codebook_size`) where unknown, as in [`MGNTPipeline`]. Not with `context_frames`.
            callback_on_step_end, callback_on_step_end_tensor_inputs: as in [`MGNTPipeline`]; `latents` is the
                token grid `[B, t, h, w]`.
            cache_refresh_interval: `None` or a positive int (see [`MGNTScheduler`]); `"scheduler"` takes the
                scheduler's setting.
            max_batch_size (`int`): the most videos decoded at once (default 256), as in [`MGNTPipeline`]: a larger
                call runs in consecutive batches; with one generator per video the tokens do not depend on it.

        Returns:
            [`MGNTVideoPipelineOutput`] or a tuple `(frames, gflops_per_video)`.
        """
        self.check_components()
        self._check_prompts(class_labels, context_frames, latents)
        guidance_scale = self._resolve_guidance_scale(class_labels, guidance_scale)
        self.check_inputs(output_type, num_videos_per_prompt, guidance_scale, use_cache, cache_refresh_interval,
                          callback_on_step_end_tensor_inputs)
        use_cache = self.scheduler.config.use_cache if use_cache is None else use_cache
        device = self._execution_device
        max_batch_size = check_positive_int("max_batch_size", max_batch_size)
        num_videos_per_prompt = int(num_videos_per_prompt)  # checked above; numpy integers become ints

        context_pixels = None if context_frames is None else self._context_pixels(context_frames)  # [Bc, C, Tc, H, W]
        labels = self._prompt_labels(class_labels, context_pixels, device).repeat_interleave(num_videos_per_prompt)
        batch_size = labels.shape[0]
        self.check_generator(generator, batch_size)
        step_widths = self.prepare_timesteps(num_inference_steps, width_schedule, device)
        self._guidance_scale = guidance_scale

        if context_pixels is None:
            num_context_frames = 0
            tokens = None if latents is None else self.prepare_latents(latents, batch_size, device)  # [B, N]
        else:
            num_context_frames = context_pixels.shape[2]
            tokens = self._context_start_grid(context_pixels, num_videos_per_prompt, device)  # [B, N]
        batches, total_flops, widths_run, full_passes = self.decode_in_batches(
            labels, tokens, step_widths, generator, use_cache, cache_refresh_interval, callback_on_step_end,
            callback_on_step_end_tensor_inputs, max_batch_size, partial(self._to_output, output_type=output_type))
        frames = self.join_batches(batches, output_type)

        self.maybe_free_model_hooks()
        gflops_per_video = total_flops / 1e9 / batch_size
        if not return_dict:
            return frames, gflops_per_video
        return MGNTVideoPipelineOutput(frames=frames, gflops_per_video=gflops_per_video, widths=widths_run,
                                       full_passes=full_passes, num_context_frames=num_context_frames)
