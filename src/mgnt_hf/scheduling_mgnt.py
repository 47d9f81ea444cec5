"""MGNT scheduler: which width runs at each decoding step, when the KV cache is rebuilt, and the
MaskGIT sampling maths of one step (docs/design.md, "Width schedule and decoding" and "KV cache").

The scheduler is the single home of the decode-time width schedule and the cache policy; the mask
schedules themselves live in `mgnt_hf.masking` (shared with training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .masking import check_mask_schedule, num_masked_after_step
from .utils.checks import check_choice, check_finite_number, check_guidance_scale, check_positive_int
# The presets, their FLOP ratios and the reasons for the default: in a module without imports, so the command line
# lists them without loading torch.
from .width_schedule_presets import DEFAULT_WIDTH_SCHEDULE, WIDTH_SCHEDULE_PRESETS

GUIDANCE_SCHEDULES = ("constant", "linear")

# A width fraction times hidden_size must land on an integer width; this only absorbs the rounding of
# fractions such as 1/3 written to JSON with finite digits.
_WIDTH_TOLERANCE = 1e-6


def resolve_width_schedule(width_schedule: str | list | tuple) -> list[list]:
    """Validate a width schedule (a preset name or `[[fraction, num_steps], ...]`) -> list of `[float, int]`.

    Fractions are in `(0, 1]` and steps positive integers. Whether `fraction * hidden_size` is a nested
    width is checked against a transformer by [`MGNTScheduler.step_widths`].
    """
    if isinstance(width_schedule, str):
        if width_schedule not in WIDTH_SCHEDULE_PRESETS:
            raise ValueError(
                f"unknown width_schedule preset {width_schedule!r}; allowed: {sorted(WIDTH_SCHEDULE_PRESETS)} "
                "or a list of [width_fraction, num_steps] pairs"
            )
        width_schedule = WIDTH_SCHEDULE_PRESETS[width_schedule]
    if not isinstance(width_schedule, (list, tuple)) or len(width_schedule) == 0:
        raise ValueError(
            f"width_schedule must be a non-empty list of [width_fraction, num_steps] pairs or a preset name "
            f"{sorted(WIDTH_SCHEDULE_PRESETS)}, got {width_schedule!r}"
        )
    segments = []
    for segment in width_schedule:
        if not isinstance(segment, (list, tuple)) or len(segment) != 2:
            raise ValueError(f"width_schedule entry {segment!r} is not a [width_fraction, num_steps] pair")
        fraction, num_steps = segment
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"width_schedule fraction {fraction!r} must be a number in (0, 1]")
        segments.append([float(fraction), check_positive_int("width_schedule step count", num_steps)])
    return segments


def rescale_width_schedule(width_schedule: list[list], num_steps: int) -> list[list]:
    """Stretch or shrink the segments' step counts to sum to `num_steps`, deterministically.

    Each segment's quota is `num_steps * steps_i / total` (exact fractions). Counts start at the quotas'
    floors; when `num_steps >= len(segments)` every segment is then raised to at least one step. Steps
    still missing go to the largest remainders (ties: the later, wider segment); surplus steps are taken
    from segments above one step with the largest excess over their quota (ties: the earlier, narrower
    segment). With fewer steps than segments, the segments that get no step are dropped. Asking for the
    schedule's own total returns it unchanged.
    """
    check_positive_int("num_inference_steps", num_steps)
    total = sum(steps for _, steps in width_schedule)
    quotas = [Fraction(num_steps * steps, total) for _, steps in width_schedule]
    counts = [math.floor(quota) for quota in quotas]
    if num_steps >= len(width_schedule):
        counts = [max(1, count) for count in counts]
    order = range(len(counts))
    while sum(counts) < num_steps:
        best = max(order, key=lambda i: (quotas[i] - counts[i], i))
        counts[best] += 1
    while sum(counts) > num_steps:
        best = max((i for i in order if counts[i] > 1), key=lambda i: (counts[i] - quotas[i], -i))
        counts[best] -= 1
    return [[fraction, count] for (fraction, _), count in zip(width_schedule, counts) if count > 0]


def width_schedule_for_submodel(width_schedule: str | list, hidden_size: int, submodel_width: int,
                                clip: bool = False) -> list[list]:
    """Re-express width schedule segments given as fractions of `hidden_size` as fractions of `submodel_width`,
    the hidden size of a sub-model extracted from the model (`MGNTTransformer.extract_submodel`).

    Each step runs the same width in channels as before: fraction `f` becomes `f * hidden_size / submodel_width`.
    A segment wider than `submodel_width` raises `ValueError`, unless `clip` is True: then its steps run at
    `submodel_width` (fraction 1), a different decode than the original. Neighbouring segments that end up at the
    same fraction are merged (the widths of every step, at any step count, are unchanged by that).
    """
    segments = resolve_width_schedule(width_schedule)
    converted: list[list] = []
    for fraction, num_steps in segments:
        channels = fraction * hidden_size
        if abs(channels - round(channels)) <= _WIDTH_TOLERANCE:
            channels = round(channels)
        if channels > submodel_width:
            if not clip:
                raise ValueError(
                    f"width_schedule segment [{fraction}, {num_steps}] runs width {channels:g} of hidden_size "
                    f"{hidden_size}, wider than the extracted width {submodel_width}; allowed: segments of fraction "
                    f"<= {submodel_width / hidden_size:g}, or clip=True to run those steps at width {submodel_width}"
                )
            channels = submodel_width
        submodel_fraction = channels / submodel_width
        if converted and converted[-1][0] == submodel_fraction:
            converted[-1][1] += num_steps
        else:
            converted.append([submodel_fraction, num_steps])
    return converted


def check_cache_refresh_interval(value) -> int | None:
    """None (rebuild the cache only when the width changes) or a positive number of steps."""
    return check_positive_int("cache_refresh_interval", value, allow_none=True)


# Keys of one `budget_schedules` entry: what runs, and what it measured when the schedule search chose it.
BUDGET_SCHEDULE_KEYS = ("max_gflops_per_image", "width_schedule", "num_inference_steps", "use_cache",
                        "gflops_per_image", "classifier_fid", "class_accuracy")


def check_budget_schedules(entries) -> list[dict] | None:
    """Validate a `budget_schedules` table (None, or a list of dicts with `BUDGET_SCHEDULE_KEYS`) -> plain lists.

    Each entry is the schedule the search (`mgnt search-schedule`) chose for a compute budget: the budget
    `max_gflops_per_image`, the decode it runs (`width_schedule` segments, `num_inference_steps`, `use_cache`), and
    what it measured on the search's confirmation seeds (`gflops_per_image`, `classifier_fid`, `class_accuracy` in
    [0, 1]). The pipeline picks among them by `max_gflops_per_image` at call time.
    """
    if entries is None:
        return None
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"budget_schedules must be None or a non-empty list of entries, got {entries!r}")
    checked = []
    for index, entry in enumerate(entries):
        where = f"budget_schedules[{index}]"
        if not isinstance(entry, dict) or set(entry) != set(BUDGET_SCHEDULE_KEYS):
            keys = sorted(entry) if isinstance(entry, dict) else entry
            raise ValueError(f"{where} must be a dict with exactly the keys {list(BUDGET_SCHEDULE_KEYS)}, got {keys!r}")
        if not isinstance(entry["use_cache"], bool):
            raise ValueError(f"{where}.use_cache must be True or False, got {entry['use_cache']!r}")
        checked.append({
            "max_gflops_per_image": check_finite_number(f"{where}.max_gflops_per_image", entry["max_gflops_per_image"],
                                                        minimum=0, exclusive_minimum=True),
            "width_schedule": resolve_width_schedule(entry["width_schedule"]),
            "num_inference_steps": check_positive_int(f"{where}.num_inference_steps", entry["num_inference_steps"]),
            "use_cache": entry["use_cache"],
            "gflops_per_image": check_finite_number(f"{where}.gflops_per_image", entry["gflops_per_image"],
                                                    minimum=0, exclusive_minimum=True),
            "classifier_fid": check_finite_number(f"{where}.classifier_fid", entry["classifier_fid"], minimum=0),
            "class_accuracy": check_finite_number(f"{where}.class_accuracy", entry["class_accuracy"],
                                                  minimum=0, maximum=1),
        })
    return checked


@dataclass
class MGNTSchedulerOutput(BaseOutput):
    """
    Output of [`MGNTScheduler.step`].

    Args:
        prev_sample (`torch.LongTensor` `[B, N]`): the token grid after this step, mask id where still masked.
        revealed (`torch.BoolTensor` `[B, N]`): positions revealed at this step.
        pred_original_sample (`torch.LongTensor` `[B, N]`): the sampled ids at every position that was
            masked before the step (the step's guess of the finished grid); known ids elsewhere.
    """

    prev_sample: torch.LongTensor
    revealed: torch.BoolTensor
    pred_original_sample: torch.LongTensor


def _step_uniforms(num_tokens: int, batch_size: int, generator, device: torch.device) -> torch.Tensor:
    """`[batch_size, 2, num_tokens]` uniforms in (0, 1): per image, one per grid position for sampling its token
    (`[:, 0]`) and one for the confidence choice (`[:, 1]`).

    One generator draws the whole batch at once on its own device; a list gives one generator per image, so image
    i of a batch gets the same numbers as a batch of one with generator i. A CPU generator's draw goes to another
    device through pinned memory without waiting for that device (2 x N floats per image, not N x codebook)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch_size} images; pass one per image")
        draws = [torch.rand((2, num_tokens), generator=image_generator,
                            device=image_generator.device if image_generator is not None else device)
                 for image_generator in generator]
        uniform = torch.stack([draw.to(draws[0].device) for draw in draws])
    else:
        draw_device = generator.device if generator is not None else device
        uniform = torch.rand((batch_size, 2, num_tokens), generator=generator, device=draw_device)
    if uniform.device != device:
        if uniform.device.type == "cpu" and device.type == "cuda":
            uniform = uniform.pin_memory()
        uniform = uniform.to(device, non_blocking=True)
    # Keep strictly inside (0, 1): both logs of the Gumbel transform stay finite, and the inverse CDF never
    # lands on a token of probability 0.
    return uniform.clamp_(torch.finfo(torch.float32).tiny, 1.0 - torch.finfo(torch.float32).eps)


def _gumbel(uniform: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(uniform))


def _sample_categorical(probs: torch.Tensor, uniform: torch.Tensor, block_size: int = 32) -> torch.LongTensor:
    """One draw from each row of `probs` `[..., K]` (non-negative, any positive total) by inverse CDF: the
    first index whose cumulative probability reaches `uniform * total` (`uniform` `[...]` in (0, 1)). Exact up
    to float rounding, with one uniform per row instead of the K of the Gumbel-max trick.

    Two levels, so that no K-long cumulative sum is needed: the block of `block_size` codes holding the target
    (cumulative sums of the block totals), then the code inside that block."""
    num_codes = probs.shape[-1]
    num_blocks = -(-num_codes // block_size)
    if num_blocks * block_size != num_codes:
        probs = torch.nn.functional.pad(probs, (0, num_blocks * block_size - num_codes))
    blocks = probs.unflatten(-1, (num_blocks, block_size))  # [..., blocks, block_size]
    block_cdf = blocks.sum(dim=-1).cumsum(dim=-1)  # [..., blocks]
    target = uniform[..., None] * block_cdf[..., -1:]  # [..., 1]
    block = torch.searchsorted(block_cdf, target).clamp_(max=num_blocks - 1)  # first block reaching the target
    before = torch.where(block > 0, block_cdf.gather(-1, (block - 1).clamp_(min=0)), 0.0)
    inner = blocks.gather(-2, block[..., None].expand(*block.shape, block_size)).squeeze(-2)  # [..., block_size]
    code = torch.searchsorted(inner.cumsum(dim=-1) + before, target)
    # Rounding may put the target just past the block's last cumulative sum: take its last code of positive
    # probability then (never one of probability 0).
    positions = torch.arange(block_size, device=probs.device)
    last_positive = torch.where(inner > 0, positions, -1).amax(dim=-1, keepdim=True)
    code = torch.where(code >= block_size, last_positive, code)
    return (block * block_size + code).squeeze(-1)


class MGNTScheduler(SchedulerMixin, ConfigMixin):
    r"""
    Decoding schedule of MaGNeTS: the width that runs at each MaskGIT step, the KV-cache policy, how many
    tokens stay masked after each step and how they are sampled. Saved as `scheduler/scheduler_config.json`,
    so a saved pipeline reproduces its sampling.

    Args:
        width_schedule (`list[[float, int]]` or `str`, defaults to `"magnets"`):
            Segments `[[width_fraction, num_steps], ...]` run in order; `width_fraction * hidden_size` must
            be one of the transformer's `nested_widths` (checked by [`step_widths`]). `[[1.0, 12]]` is the
            MaskGIT baseline. A preset name from `WIDTH_SCHEDULE_PRESETS` is accepted; the default
            `[[0.125, 1], [0.25, 4], [0.5, 4], [1.0, 3]]` spends 4.3x fewer transformer FLOPs than the
            baseline with its cache (see the table above `WIDTH_SCHEDULE_PRESETS` for why this split).
            Its step total is the default `num_inference_steps`.
        use_cache (`bool`, defaults to `True`):
            Run only the active tokens against cached keys/values of the others. Off: every step is a full
            pass, exactly MaskGIT.
        cache_refresh_interval (`int`, *optional*):
            `None`: rebuild the cache (a full pass) only at the first step and whenever the width changes.
            `k`: also rebuild once `k` steps have passed since the last rebuild; that step's own forward is
            the full pass (no extra pass). `1` makes every step a full pass.
        mask_schedule (`str`, defaults to `"cosine"`):
            How many tokens stay masked after each step; one of `mgnt_hf.masking.MASK_SCHEDULES`.
        temperature (`float`, defaults to 1.0):
            Masked positions are sampled from `softmax(logits / temperature)`; 0 takes the argmax.
        choice_temperature (`float`, defaults to 4.5):
            Scale of the Gumbel noise added to confidences, annealed linearly to 0:
            `choice_temperature * (1 - (t + 1) / T)` at step `t` of `T` (MaskGIT's value for ImageNet).
        guidance_scale (`float`, defaults to 2.0):
            Default classifier-free guidance scale of the pipeline; 1 turns guidance off.
        guidance_schedule (`str`, defaults to `"constant"`):
            `constant`: scale `s` at every step. `linear`: `1 + (s - 1) * (t + 1) / T`, rising to `s` at the
            last step (less guidance while the image layout forms).
        budget_schedules (`list[dict]`, *optional*):
            The measured table of the schedule search (`mgnt search-schedule`, see `check_budget_schedules`):
            `pipe(labels, max_gflops_per_image=G)` runs the entry of lowest measured classifier FID among those
            whose transformer GFLOPs/image fit in `G`. Unused by a decode that does not ask for a budget.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        width_schedule: list | str = WIDTH_SCHEDULE_PRESETS[DEFAULT_WIDTH_SCHEDULE],
        use_cache: bool = True,
        cache_refresh_interval: int | None = None,
        mask_schedule: str = "cosine",
        temperature: float = 1.0,
        choice_temperature: float = 4.5,
        guidance_scale: float = 2.0,
        guidance_schedule: str = "constant",
        budget_schedules: list[dict] | None = None,
    ):
        # The config keeps the segments themselves, not a preset name, so a saved pipeline decodes the same
        # even if a preset is redefined later.
        self.register_to_config(width_schedule=resolve_width_schedule(width_schedule))
        if not isinstance(use_cache, bool):
            raise ValueError(f"use_cache must be True or False, got {use_cache!r}")
        check_cache_refresh_interval(cache_refresh_interval)
        check_mask_schedule(mask_schedule)
        check_finite_number("temperature", temperature, minimum=0)
        check_finite_number("choice_temperature", choice_temperature, minimum=0)
        check_guidance_scale(guidance_scale)
        self.check_guidance_schedule(guidance_schedule)
        self.register_to_config(budget_schedules=check_budget_schedules(budget_schedules))
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None
        self.width_schedule: list[list] | None = None
        self.step_width_fractions: list[float] | None = None
        self.set_timesteps()

    @staticmethod
    def check_guidance_schedule(name: str) -> str:
        return check_choice("guidance_schedule", name, GUIDANCE_SCHEDULES)

    def for_submodel(self, hidden_size: int, submodel_width: int, clip: bool = False) -> MGNTScheduler:
        """This scheduler for a sub-model of width `submodel_width` extracted from a transformer of `hidden_size`
        (`MGNTTransformer.extract_submodel`): the same settings, with the width schedule re-expressed in the
        sub-model's hidden size (see `width_schedule_for_submodel`: a wider segment raises `ValueError` unless
        `clip`). Of `budget_schedules`, the entries whose schedules fit in `submodel_width` are kept, re-expressed
        (the same decodes, so their measurements still hold); the others are dropped, clipped or not (a clipped
        decode was not measured); None when none fits.
        """
        width_schedule = width_schedule_for_submodel(self.config.width_schedule, hidden_size, submodel_width, clip)
        budget_schedules = None
        if self.config.budget_schedules:
            fitting = []
            for entry in self.config.budget_schedules:
                try:
                    entry_schedule = width_schedule_for_submodel(entry["width_schedule"], hidden_size, submodel_width)
                except ValueError:
                    continue
                fitting.append({**entry, "width_schedule": entry_schedule})
            budget_schedules = fitting or None
        return MGNTScheduler.from_config(self.config, width_schedule=width_schedule,
                                         budget_schedules=budget_schedules)

    def set_timesteps(self, num_inference_steps: int | None = None, width_schedule: list | str | None = None,
                      device: str | torch.device | None = None):
        """Set the steps of the next decode.

        Args:
            num_inference_steps: number of steps `T`; the width schedule's segments are rescaled to it (see
                `rescale_width_schedule`). None: the schedule's own total.
            width_schedule: segments or preset name for this decode; None: the configured one.
            device: where `timesteps` live.

        Sets `timesteps` (`arange(T)`: the 0-based step index, counting up), `width_schedule` (the rescaled
        segments) and `step_width_fractions` (one width fraction per step).
        """
        segments = resolve_width_schedule(self.config.width_schedule if width_schedule is None else width_schedule)
        if num_inference_steps is not None:
            segments = rescale_width_schedule(segments, num_inference_steps)
        self.width_schedule = segments
        self.step_width_fractions = [fraction for fraction, steps in segments for _ in range(steps)]
        self.num_inference_steps = len(self.step_width_fractions)
        self.timesteps = torch.arange(self.num_inference_steps, device=device)

    def step_widths(self, hidden_size: int, nested_widths: tuple[int, ...] | list[int]) -> list[int]:
        """The width (in channels) of every step for a transformer of `hidden_size` with `nested_widths`."""
        widths = []
        for fraction in self.step_width_fractions:
            width = fraction * hidden_size
            if abs(width - round(width)) > _WIDTH_TOLERANCE or round(width) not in nested_widths:
                raise ValueError(
                    f"width_schedule fraction {fraction} gives width {width:g} for hidden_size {hidden_size}, which "
                    f"is not one of nested_widths {list(nested_widths)}; allowed fractions: "
                    f"{[nested / hidden_size for nested in nested_widths]}"
                )
            widths.append(round(width))
        return widths

    def needs_full_pass(self, step_index: int, width: int, cache_width: int | None, last_full_pass_step: int | None,
                        use_cache: bool | None = None, cache_refresh_interval: int | None | str = "scheduler") -> bool:
        """The cache policy: whether step `step_index` at `width` must run a full pass (rebuilding the cache).

        True without caching, at the first step (no cache yet, `cache_width` None), when `width` differs from
        the width the cache was built at, and when `cache_refresh_interval` steps have passed since the last
        full pass. `use_cache` None and `cache_refresh_interval` `"scheduler"` take the configured values.
        """
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache_refresh_interval == "scheduler":
            cache_refresh_interval = self.config.cache_refresh_interval
        if not use_cache or cache_width is None or cache_width != width or last_full_pass_step is None:
            return True
        return cache_refresh_interval is not None and step_index - last_full_pass_step >= cache_refresh_interval

    def decode_plan(self, num_tokens: int, use_cache: bool | None = None,
                    cache_refresh_interval: int | None | str = "scheduler") -> list[tuple[float, bool, int]]:
        """What each step of the current timesteps runs when the decode starts from a fully masked grid of
        `num_tokens`: `(width_fraction, full_pass, num_tokens_run)` per step.

        The pipeline's loop follows the same rules (this cache policy, and active tokens = still masked + revealed
        at the previous step, which is the masked count before the previous step), so the FLOPs of a schedule can be
        known before it runs. Arguments as in `needs_full_pass`.
        """
        plan, cache_fraction, last_full_pass_step = [], None, None
        for step_index, fraction in enumerate(self.step_width_fractions):
            full_pass = self.needs_full_pass(step_index, fraction, cache_fraction, last_full_pass_step,
                                             use_cache=use_cache, cache_refresh_interval=cache_refresh_interval)
            if full_pass:
                cache_fraction, last_full_pass_step, num_run = fraction, step_index, num_tokens
            else:
                num_run = num_masked_after_step(self.config.mask_schedule, step_index - 2, self.num_inference_steps,
                                                num_tokens) if step_index >= 2 else num_tokens
            plan.append((fraction, full_pass, num_run))
        return plan

    def guidance_scale_at(self, step_index: int, guidance_scale: float) -> float:
        """Guidance scale of step `step_index` under the configured `guidance_schedule`."""
        if self.config.guidance_schedule == "constant":
            return guidance_scale
        return 1.0 + (guidance_scale - 1.0) * (step_index + 1) / self.num_inference_steps

    def num_masked_after(self, step_index: int, num_masked_at_start: torch.LongTensor) -> torch.LongTensor:
        """Tokens that stay masked after step `step_index`, per image: the mask schedule applied to each
        image's own count of unknown tokens at the start of the decode (`[B]` -> `[B]`). Reads the counts on
        the host; a decode loop uses `masked_counts` once instead."""
        counts = torch.empty_like(num_masked_at_start)
        for start in torch.unique(num_masked_at_start).tolist():  # a handful of distinct counts, not tokens
            counts[num_masked_at_start == start] = num_masked_after_step(
                self.config.mask_schedule, step_index, self.num_inference_steps, start)
        return counts

    def masked_counts(self, num_masked_at_start: list[int]) -> list[list[int]]:
        """The whole decode's counts on the host: entry `[t][i]` is how many tokens of image `i` stay masked
        after step `t`, for images starting with `num_masked_at_start[i]` unknown tokens. A decode loop that
        passes row `t` to `step` as `num_masked_after` needs no device read to know them."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before masked_counts")
        per_start = {start: [num_masked_after_step(self.config.mask_schedule, step_index, self.num_inference_steps,
                                                   start) for step_index in range(self.num_inference_steps)]
                     for start in set(num_masked_at_start)}
        return [[per_start[start][step_index] for start in num_masked_at_start]
                for step_index in range(self.num_inference_steps)]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.LongTensor,
        mask_token_id: int,
        num_masked_at_start: torch.LongTensor | None = None,
        active_positions: torch.LongTensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        num_masked_after: torch.LongTensor | None = None,
        check_positions: bool = True,
    ) -> MGNTSchedulerOutput | tuple:
        """One MaskGIT step: sample every masked position, keep the least confident masked.

        Args:
            model_output (`torch.Tensor`): logits (guidance already applied) `[B, N, K]` for every grid
                position, or `[B, A, K]` for `active_positions` only.
            timestep (`int`): the 0-based step index (an entry of `timesteps`).
            sample (`torch.LongTensor` `[B, N]` or `[B, h, w]`): the token grid before the step.
            mask_token_id (`int`): the id of masked positions (`codebook_size`).
            num_masked_at_start (`torch.LongTensor` `[B]`, *optional*): unknown tokens of each image when the
                decode began; the schedule counts from it. Default: all N.
            active_positions (`torch.LongTensor` `[B, A]`, *optional*): the grid positions `model_output`
                covers; every masked position must be among them.
            generator: one `torch.Generator`, or a list with one per image. Each image draws two uniforms per
                grid position (all N, whichever are active): one samples its token from
                `softmax(logits / temperature)` by inverse CDF, one is the Gumbel noise of the confidence
                choice. So image i of a list's batch equals a batch of one with generator i, and the draws do
                not depend on the active set.
            num_masked_after (`torch.LongTensor` `[B]`, *optional*): tokens of each image that stay masked after
                this step, if known (row `timestep` of `masked_counts`, on the device): saves reading
                `num_masked_at_start` on the host.
            check_positions (`bool`, defaults to `True`): check that `active_positions` cover every masked
                position (a device read); a caller that built them from the mask may skip it.

        Returns:
            [`MGNTSchedulerOutput`] (or a tuple `(prev_sample, revealed, pred_original_sample)`), shaped like
            `sample`. After the last step no position is masked; every other step reveals at least one token
            of each image that still has masked ones.
        """
        step_index = int(timestep)
        if self.num_inference_steps is None or not 0 <= step_index < self.num_inference_steps:
            raise ValueError(f"timestep {timestep!r} is not a step of this decode: allowed 0..{self.num_inference_steps - 1}")
        grid_shape = sample.shape
        sample = sample.reshape(sample.shape[0], -1)
        batch_size, num_tokens = sample.shape
        device = sample.device
        masked = sample == mask_token_id  # [B, N]

        # Per-image noise over the whole grid: one uniform per position for sampling, one for the choice.
        sampling_uniform, choice_uniform = _step_uniforms(num_tokens, batch_size, generator, device).unbind(1)

        logits = model_output.float()
        if active_positions is None:
            if logits.shape[:2] != (batch_size, num_tokens):
                raise ValueError(f"model_output must be [B={batch_size}, N={num_tokens}, K], got {list(logits.shape)}")
            positions = None
        else:
            if logits.shape[:2] != active_positions.shape:
                raise ValueError(
                    f"model_output {list(logits.shape)} does not cover active_positions {list(active_positions.shape)}")
            if check_positions:
                covered = torch.zeros_like(masked).scatter_(1, active_positions, True)
                if bool((masked & ~covered).any()):
                    raise ValueError("every masked position must be in active_positions")
            positions = active_positions
            sampling_uniform = torch.gather(sampling_uniform, 1, positions)
            choice_uniform = torch.gather(choice_uniform, 1, positions)

        temperature = self.config.temperature
        if temperature == 1.0:
            probs = torch.softmax(logits, dim=-1)
            sampled = _sample_categorical(probs, sampling_uniform)
            confidence = torch.log(torch.gather(probs, -1, sampled[..., None])[..., 0])  # never of probability 0
        else:
            if temperature > 0:
                sampled = _sample_categorical(torch.softmax(logits / temperature, dim=-1), sampling_uniform)
            else:
                sampled = torch.argmax(logits, dim=-1)
            # log softmax(logits) at the sampled token, without writing the K log-probabilities
            confidence = torch.gather(logits, -1, sampled[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        annealed = self.config.choice_temperature * (1.0 - (step_index + 1) / self.num_inference_steps)
        confidence = confidence + annealed * _gumbel(choice_uniform)

        if positions is not None:  # back to grid positions; positions not run are known tokens
            sampled = sample.clone().scatter_(1, positions, sampled)
            confidence = torch.full((batch_size, num_tokens), math.inf, device=device).scatter_(1, positions, confidence)
        sampled = torch.where(masked, sampled, sample)
        confidence = torch.where(masked, confidence, math.inf)  # known tokens never go back to masked

        # Keep the `keep` least confident masked: rank positions by confidence, exact count even with ties.
        if step_index == self.num_inference_steps - 1:
            keep = torch.zeros((batch_size,), dtype=torch.long, device=device)
        else:
            if num_masked_after is None:
                if num_masked_at_start is None:
                    num_masked_at_start = torch.full((batch_size,), num_tokens, dtype=torch.long, device=device)
                num_masked_after = self.num_masked_after(step_index, num_masked_at_start.to(device))
            keep = torch.minimum(num_masked_after.to(device), (masked.sum(dim=1) - 1).clamp(min=0))
        order = torch.argsort(confidence, dim=1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(num_tokens, device=device).expand_as(order))
        stay_masked = rank < keep[:, None]
        prev_sample = torch.where(stay_masked, mask_token_id, sampled)
        revealed = masked & ~stay_masked

        prev_sample, revealed, sampled = (t.reshape(grid_shape) for t in (prev_sample, revealed, sampled))
        if not return_dict:
            return prev_sample, revealed, sampled
        return MGNTSchedulerOutput(prev_sample=prev_sample, revealed=revealed, pred_original_sample=sampled)
