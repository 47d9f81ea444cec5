"""The decode loop reads nothing back from the device per step (each read is a synchronisation on a GPU), and
the scheduler's sampling draws O(N) noise: an exact inverse-CDF sampler with one uniform per position.

Host reads are counted by wrapping the tensor methods that copy a value to the host; the counts must not grow
with the number of steps. On the CPU nothing synchronises, so these tests check the code path, not timing.
"""

import collections

import pytest
import torch

from mgnt_hf import MGNTScheduler
from mgnt_hf.scheduling_mgnt import _sample_categorical, _step_uniforms

HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")


@pytest.fixture
def host_reads(monkeypatch):
    counts = collections.Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def reader(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, reader)
    return counts


def decode(pipe, steps, host_reads=None, **kwargs):
    if host_reads is not None:
        host_reads.clear()
    output = pipe([0, 1, 2], num_inference_steps=steps, output_type="latent",
                  generator=kwargs.pop("generator", torch.Generator().manual_seed(0)), **kwargs)
    return output.images, sum(host_reads.values()) if host_reads is not None else None


@pytest.mark.parametrize("settings", [
    {},  # the default schedule with its cache
    {"use_cache": False},
    {"width_schedule": "maskgit", "use_cache": True},
    {"guidance_scale": 1.0},
    {"cache_refresh_interval": 2},
    {"generator": [torch.Generator().manual_seed(seed) for seed in range(3)]},
], ids=["default", "no-cache", "maskgit-cache", "no-guidance", "refresh-2", "generator-list"])
def test_host_reads_of_a_decode_do_not_grow_with_its_steps(tiny_pipeline, host_reads, settings):
    _, reads_3 = decode(tiny_pipeline, 3, host_reads, **dict(settings))
    _, reads_12 = decode(tiny_pipeline, 12, host_reads, **dict(settings))
    assert reads_12 == reads_3


def test_the_step_loop_reads_the_start_counts_once(tiny_pipeline, host_reads):
    labels = torch.tensor([0, 1, 2])
    tokens = torch.full((3, 16), tiny_pipeline.transformer.config.mask_token_id)
    tiny_pipeline.scheduler.set_timesteps(12)
    step_widths = tiny_pipeline.scheduler.step_widths(64, tiny_pipeline.transformer.config.nested_widths)
    tiny_pipeline._guidance_scale, tiny_pipeline._num_timesteps = 2.0, 12
    host_reads.clear()
    decoded, *_ = tiny_pipeline.decode_tokens(labels, tokens, step_widths, torch.Generator().manual_seed(0),
                                              True, None, None, [])
    assert dict(host_reads) == {"tolist": 1}
    assert not bool((decoded == tiny_pipeline.transformer.config.mask_token_id).any())


@pytest.mark.parametrize("use_cache", [True, False])
def test_known_tokens_of_different_counts_per_image_decode_as_without_the_host_counts(tiny_pipeline, use_cache):
    """Start grids with 0, 5 and 16 unknown tokens: the host's counts equal what the device would read, so a
    callback (which switches the loop to reading the device after each step) changes nothing."""
    mask_id = tiny_pipeline.transformer.config.mask_token_id
    latents = torch.randint(0, 16, (3, 4, 4), generator=torch.Generator().manual_seed(1))
    latents[1].view(-1)[:5] = mask_id
    latents[2] = mask_id
    host, _ = decode(tiny_pipeline, 12, latents=latents.clone(), use_cache=use_cache)
    synced, _ = decode(tiny_pipeline, 12, latents=latents.clone(), use_cache=use_cache,
                       callback_on_step_end=lambda pipe, step, timestep, kwargs: {})
    assert torch.equal(host, synced)
    assert torch.equal(host[0], latents[0]) and torch.equal(host[1].view(-1)[5:], latents[1].view(-1)[5:])


def test_host_counts_equal_the_schedule_per_step():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(12)
    starts = [256, 17, 0, 256]
    table = scheduler.masked_counts(starts)
    assert len(table) == 12 and table[-1] == [0, 0, 0, 0]
    for step_index, row in enumerate(table):
        assert row == scheduler.num_masked_after(step_index, torch.tensor(starts)).tolist()


def test_one_generator_draws_the_batch_at_once_and_a_list_one_stream_per_image():
    batch = _step_uniforms(16, 3, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert batch.shape == (3, 2, 16) and bool(((batch > 0) & (batch < 1)).all())
    expected = torch.rand((3, 2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(batch, expected.clamp(torch.finfo(torch.float32).tiny, 1 - torch.finfo(torch.float32).eps))
    listed = _step_uniforms(16, 2, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)],
                            torch.device("cpu"))
    alone = _step_uniforms(16, 1, [torch.Generator().manual_seed(6)], torch.device("cpu"))
    assert torch.equal(listed[1], alone[0])


def test_inverse_cdf_sampling_picks_the_token_whose_cumulative_interval_holds_the_uniform():
    probs = torch.tensor([0.25, 0.0, 0.5, 0.25]).expand(6, 4)  # cumulative 0.25, 0.25, 0.75, 1
    uniform = torch.tensor([0.1, 0.25, 0.26, 0.75, 0.76, 0.999])
    assert _sample_categorical(probs, uniform).tolist() == [0, 0, 2, 2, 3, 3]
    # unnormalised rows are sampled as their normalisation
    assert _sample_categorical(4 * probs, uniform).tolist() == [0, 0, 2, 2, 3, 3]


def test_inverse_cdf_sampling_has_the_softmax_frequencies():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0, -30.0])
    probs = torch.softmax(logits, dim=0)
    draws = 200_000
    uniform = torch.rand(draws, generator=torch.Generator().manual_seed(0)).clamp(1e-38, 1 - 2**-24)
    samples = _sample_categorical(probs.expand(draws, -1), uniform)
    frequencies = torch.bincount(samples, minlength=5).double() / draws
    standard_errors = (probs.double() * (1 - probs.double()) / draws).sqrt()
    assert bool(((frequencies - probs.double()).abs() <= 5 * standard_errors + 1e-9).all()), frequencies


@pytest.mark.parametrize("num_codes, block_size", [(1000, 32), (1024, 32), (16, 32), (7, 2)])
def test_two_level_sampling_equals_the_flat_inverse_cdf(num_codes, block_size):
    # Multiples of 2**-10 so that every partial sum is exact in float32 whichever way it is added up.
    generator = torch.Generator().manual_seed(0)
    probs = torch.randint(0, 5, (500, num_codes), generator=generator).float() / 1024
    probs[:, 0] += 1 / 1024  # every row has some mass
    probs[:50, :-1], probs[:50, -1] = 0, 3 / 1024  # rows whose only mass is the last code
    uniform = torch.rand(500, generator=generator).clamp(1e-38, 1 - 2**-24)
    cdf = probs.cumsum(dim=-1)
    flat = torch.searchsorted(cdf, (uniform[:, None] * cdf[:, -1:])).squeeze(-1)
    sampled = _sample_categorical(probs, uniform, block_size=block_size)
    assert torch.equal(sampled, flat)
    assert bool((probs.gather(-1, sampled[:, None]) > 0).all())
    assert bool((sampled[:50] == num_codes - 1).all())


def test_rounding_past_a_blocks_last_sum_never_picks_a_code_of_probability_zero():
    # 0.1 is not exact in float32: the block totals' sum and the in-block running sum may differ in the last bit.
    probs = torch.tensor([[0.1, 0.2, 0.0, 0.0] * 8 + [0.3, 0.1, 0.0, 0.0]])
    for u in (1 - 2**-24, 0.999999, 0.5, 1e-30):
        sampled = int(_sample_categorical(probs, torch.tensor([u]), block_size=4))
        assert probs[0, sampled] > 0
