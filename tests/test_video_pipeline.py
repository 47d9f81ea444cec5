"""MGNTVideoPipeline: class-conditional video generation and frame prediction (context tokens fixed), the KV
cache and FLOPs on video grids, output layouts, bad input, saving/loading/publishing, export_to_video."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import (
    make_tiny_transformer,
    make_tiny_video_transformer,
    make_tiny_video_vqvae,
    make_tiny_vqvae,
)
from fake_hub import fake_hub_server, run_client  # noqa: F401  (fixture import)
from torch.utils.flop_counter import FlopCounterMode

from mgnt_hf import MGNTPipeline, MGNTScheduler, MGNTVideoPipeline, export_to_video
from mgnt_hf.video_io import decode_video

MASK_ID = 16  # the tiny transformer's codebook_size
TOKENS_PER_LATENT_FRAME = 16  # 4x4


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def context_of(num_videos, num_frames=2, seed=0, channels=1):
    """`[B, Tc, C, 16, 16]` random context frames in [0, 1] (the "pt" layout)."""
    return torch.rand(num_videos, num_frames, channels, 16, 16, generator=seeded(seed))


def long_video_pipeline():
    """8-frame clips (x2 in time) -> 4x4x4 tokens: room for 2, 4 or 6 context frames."""
    pipe = MGNTVideoPipeline(make_tiny_video_transformer(token_grid=(4, 4, 4)), make_tiny_video_vqvae(num_frames=8),
                             MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record_forwards(pipe):
    """Patch the transformer to record (batch size, labels, width, active positions) of every forward."""
    forwards, forward = [], pipe.transformer.forward

    def recording_forward(input_ids, class_labels, width=None, cache=None, active_positions=None, **kwargs):
        forwards.append((input_ids.shape[0], class_labels.clone(), width,
                         None if active_positions is None else active_positions.clone()))
        return forward(input_ids, class_labels, width=width, cache=cache, active_positions=active_positions, **kwargs)

    pipe.transformer.forward = recording_forward
    return forwards


# ---------------------------------------------------------------- outputs


def test_every_output_type_has_the_video_layout(tiny_video_pipeline):
    def call(output_type, **kwargs):
        return tiny_video_pipeline([0, 2], generator=seeded(), output_type=output_type, **kwargs)

    np_out, pt, pil, latent = call("np"), call("pt").frames, call("pil").frames, call("latent").frames
    frames = np_out.frames
    assert frames.shape == (2, 4, 16, 16, 1) and frames.dtype == np.float32
    assert frames.min() >= 0 and frames.max() <= 1
    assert np_out.num_context_frames == 0 and np_out.gflops_per_video > 0
    assert pt.shape == (2, 4, 1, 16, 16) and torch.equal(pt.permute(0, 1, 3, 4, 2), torch.from_numpy(frames))
    assert len(pil) == 2 and all(len(video) == 4 for video in pil)
    assert all(isinstance(frame, PIL.Image.Image) and frame.size == (16, 16) and frame.mode == "L"
               for video in pil for frame in video)
    assert np.array_equal(np.asarray(pil[1][3]), (frames[1, 3, ..., 0] * 255).round().astype(np.uint8))
    assert latent.shape == (2, 2, 4, 4) and latent.dtype == torch.long and bool((latent < MASK_ID).all())
    decoded = tiny_video_pipeline.vqvae.decode(latent) / 2 + 0.5  # [B, C, T, H, W]
    assert torch.allclose(pt, decoded.clamp(0, 1).permute(0, 2, 1, 3, 4))
    video, gflops = call("np", return_dict=False)
    assert np.array_equal(video, frames) and gflops == np_out.gflops_per_video


def test_rgb_videos_come_out_with_three_channels():
    pipe = MGNTVideoPipeline(make_tiny_video_transformer(), make_tiny_video_vqvae(num_channels=3), MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    frames = pipe([1], generator=seeded(), output_type="np").frames
    assert frames.shape == (1, 4, 16, 16, 3)
    pil = pipe([1], generator=seeded(), output_type="pil").frames
    assert pil[0][0].mode == "RGB"


def test_class_conditional_videos_follow_the_width_schedule_with_the_cache(tiny_video_pipeline):
    out = tiny_video_pipeline([0, 1], generator=seeded(), output_type="latent")
    assert out.widths == [8] + [16] * 4 + [32] * 4 + [64] * 3
    assert out.full_passes == [True, True, False, False, False, True, False, False, False, True, False, False]


def test_label_names_equal_their_ids(tiny_video_pipeline):
    by_name = tiny_video_pipeline(["trouser", "Ankle boot"], generator=seeded(), output_type="latent").frames
    by_id = tiny_video_pipeline([1, 2], generator=seeded(), output_type="latent").frames
    assert torch.equal(by_name, by_id)


def test_gflops_per_video_match_torchs_flop_counter(tiny_video_pipeline):
    with FlopCounterMode(display=False) as counter:
        out = tiny_video_pipeline([0, 1, 2], generator=seeded(), output_type="latent", guidance_scale=3.0)
    assert out.gflops_per_video == pytest.approx(counter.get_total_flops() / 3 / 1e9, rel=0.05)


# ---------------------------------------------------------------- frame prediction


@pytest.mark.parametrize("num_context_frames", [2, 4, 6])
def test_frame_prediction_keeps_the_context_tokens_exactly(num_context_frames):
    pipe = long_video_pipeline()
    context = context_of(2, num_context_frames)
    out = pipe(context_frames=context, generator=seeded(), output_type="latent")
    encoded = pipe.vqvae.encode(context.permute(0, 2, 1, 3, 4) * 2 - 1)  # [2, Tc/2, 4, 4]
    num_latent_frames = num_context_frames // 2
    assert out.num_context_frames == num_context_frames
    assert out.frames.shape == (2, 4, 4, 4) and bool((out.frames < MASK_ID).all())
    assert torch.equal(out.frames[:, :num_latent_frames], encoded)


def test_context_tokens_are_decoded_by_no_cached_step(tiny_video_pipeline):
    forwards = record_forwards(tiny_video_pipeline)
    out = tiny_video_pipeline(context_frames=context_of(2), generator=seeded(), output_type="latent")
    cached = [active for _, _, _, active in forwards if active is not None]
    assert len(cached) == out.full_passes.count(False) > 0
    # The context's 16 tokens come first in the sequence; cached steps run only positions after them.
    assert all(bool((active >= TOKENS_PER_LATENT_FRAME).all()) for active in cached)


def test_frame_prediction_runs_fewer_flops_than_generating_the_whole_video(tiny_video_pipeline):
    whole = tiny_video_pipeline([0, 0], generator=seeded(), output_type="latent", guidance_scale=1.0)
    predicted = tiny_video_pipeline(context_frames=context_of(2), generator=seeded(), output_type="latent")
    assert predicted.gflops_per_video < whole.gflops_per_video


def test_every_context_layout_gives_the_same_video(tiny_video_pipeline):
    uint8 = (torch.rand(2, 2, 16, 16, 1, generator=seeded(3)) * 255).round().to(torch.uint8).numpy()  # np layout
    as_float = uint8.astype(np.float32) / 255
    layouts = {
        "np uint8": uint8,
        "np float": as_float,
        "pt": torch.from_numpy(as_float).permute(0, 1, 4, 2, 3),
        "pil": [[PIL.Image.fromarray(frame[..., 0], mode="L") for frame in video] for video in uint8],
    }
    outputs = {name: tiny_video_pipeline(context_frames=context, generator=seeded(), output_type="latent").frames
               for name, context in layouts.items()}
    for name, frames in outputs.items():
        assert torch.equal(frames, outputs["np float"]), name


def test_guidance_is_off_without_class_labels(tiny_video_pipeline):
    forwards = record_forwards(tiny_video_pipeline)
    out = tiny_video_pipeline(context_frames=context_of(3), generator=seeded(), output_type="latent")
    null_class = tiny_video_pipeline.transformer.config.null_class_id
    assert [batch for batch, _, _, _ in forwards] == [3] * len(forwards)  # one branch, not 2B
    assert all(bool((labels == null_class).all()) for _, labels, _, _ in forwards)
    explicit = tiny_video_pipeline(context_frames=context_of(3), generator=seeded(), output_type="latent",
                                   guidance_scale=1)
    assert torch.equal(out.frames, explicit.frames)


def test_context_with_one_label_per_video_is_guided_by_those_labels(tiny_video_pipeline):
    with torch.no_grad():  # sharp logits, so that the label changes the sampled tokens of a random model
        for parameter in tiny_video_pipeline.transformer.parameters():
            if parameter.dim() >= 2:
                parameter.mul_(20)
    forwards = record_forwards(tiny_video_pipeline)
    out = tiny_video_pipeline([2, 0], context_frames=context_of(2), generator=seeded(), output_type="latent",
                              guidance_scale=3.0)
    assert [batch for batch, _, _, _ in forwards] == [4] * len(forwards)  # both guidance branches
    assert forwards[0][1].tolist() == [2, 0, 3, 3]
    unconditioned = tiny_video_pipeline(context_frames=context_of(2), generator=seeded(), output_type="latent")
    assert not torch.equal(out.frames, unconditioned.frames)


def test_num_videos_per_prompt_repeats_labels_and_context(tiny_video_pipeline):
    context = context_of(2)
    generators = [seeded(seed) for seed in range(4)]
    repeated = tiny_video_pipeline([0, 2], context_frames=context, num_videos_per_prompt=2, generator=generators,
                                   output_type="latent")
    spelled_out = tiny_video_pipeline([0, 0, 2, 2], context_frames=context.repeat_interleave(2, dim=0),
                                      generator=[seeded(seed) for seed in range(4)], output_type="latent")
    assert repeated.frames.shape == (4, 2, 4, 4)
    assert torch.equal(repeated.frames, spelled_out.frames)
    class_only = tiny_video_pipeline([1], num_videos_per_prompt=3, generator=seeded(), output_type="latent").frames
    assert class_only.shape == (3, 2, 4, 4)


def test_frames_include_the_reconstructed_context(tiny_video_pipeline):
    out = tiny_video_pipeline(context_frames=context_of(1), generator=seeded(), output_type="pt")
    latent = tiny_video_pipeline(context_frames=context_of(1), generator=seeded(), output_type="latent").frames
    assert out.frames.shape == (1, 4, 1, 16, 16) and out.num_context_frames == 2
    reconstruction = (tiny_video_pipeline.vqvae.decode(latent) / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
    assert torch.equal(out.frames, reconstruction)


def test_callback_sees_the_token_video_with_the_context_unchanged(tiny_video_pipeline):
    context = context_of(2)
    encoded = tiny_video_pipeline.vqvae.encode(context.permute(0, 2, 1, 3, 4) * 2 - 1)  # [2, 1, 4, 4]
    seen = []

    def record(pipe, step, timestep, callback_kwargs):
        latents = callback_kwargs["latents"]
        seen.append((tuple(latents.shape), torch.equal(latents[:, :1], encoded), int((latents == MASK_ID).sum())))
        return {}

    tiny_video_pipeline(context_frames=context, generator=seeded(), output_type="latent", callback_on_step_end=record)
    assert [entry[:2] for entry in seen] == [((2, 2, 4, 4), True)] * 12
    assert seen[0][2] > 0 and seen[-1][2] == 0


# ---------------------------------------------------------------- cache and generators


@pytest.mark.parametrize("task", ["class-conditional", "frame-prediction"])
def test_cache_refreshed_every_step_equals_cache_off(tiny_video_pipeline, task):
    inputs = dict(class_labels=[0, 1, 2]) if task == "class-conditional" else dict(context_frames=context_of(3))
    cached = tiny_video_pipeline(**inputs, generator=seeded(), output_type="latent", cache_refresh_interval=1)
    uncached = tiny_video_pipeline(**inputs, generator=seeded(), output_type="latent", use_cache=False)
    assert all(cached.full_passes) and all(uncached.full_passes)
    assert torch.equal(cached.frames, uncached.frames)
    assert cached.gflops_per_video == uncached.gflops_per_video


@pytest.mark.parametrize("task", ["class-conditional", "frame-prediction"])
def test_a_list_of_generators_equals_separate_calls(tiny_video_pipeline, task):
    labels, seeds, context = [0, 2, 1], [5, 6, 7], context_of(3)
    inputs = dict(class_labels=labels) if task == "class-conditional" else dict(context_frames=context)
    batched = tiny_video_pipeline(**inputs, generator=[seeded(s) for s in seeds], output_type="latent").frames
    for video, seed in enumerate(seeds):
        single_inputs = dict(class_labels=[labels[video]]) if task == "class-conditional" else dict(
            context_frames=context[video:video + 1])
        single = tiny_video_pipeline(**single_inputs, generator=seeded(seed), output_type="latent").frames
        assert torch.equal(batched[video], single[0]), video


def test_given_latents_are_kept_in_class_conditional_generation(tiny_video_pipeline):
    start = torch.full((2, 2, 4, 4), MASK_ID)
    start[:, 1, 0] = torch.tensor([1, 2, 3, 4])  # first row of the second latent frame known
    out = tiny_video_pipeline([0, 1], latents=start, generator=seeded(), output_type="latent")
    assert torch.equal(out.frames[:, 1, 0], start[:, 1, 0]) and bool((out.frames < MASK_ID).all())


# ---------------------------------------------------------------- bad input

EXPECTED_PT = r"context_frames must be \[B, Tc, 1, 16, 16\] with Tc a multiple of 2 in 2..2"


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "give class_labels .* context_frames .* or both"),
    (dict(context_frames=context_of(2, num_frames=4)), EXPECTED_PT + r", got \[2, 4, 1, 16, 16\]"),
    (dict(context_frames=context_of(2, num_frames=1)), EXPECTED_PT + r", got \[2, 1, 1, 16, 16\]"),
    (dict(context_frames=torch.rand(2, 2, 1, 32, 32)), EXPECTED_PT + r", got \[2, 2, 1, 32, 32\]"),
    (dict(context_frames=context_of(2, channels=3)), EXPECTED_PT + r", got \[2, 2, 3, 16, 16\]"),
    (dict(context_frames=torch.rand(2, 1, 16, 16)), EXPECTED_PT + r", got \[2, 1, 16, 16\]"),
    (dict(context_frames=np.zeros((2, 3, 16, 16, 1), np.float32)),
     r"context_frames must be \[B, Tc, 16, 16, 1\] with Tc a multiple of 2 in 2..2, got \[2, 3, 16, 16, 1\]"),
    (dict(context_frames=[[PIL.Image.new("L", (16, 16))] * 2, [PIL.Image.new("L", (16, 16))]]),
     r"a list \(one per video\) of lists of Tc L PIL frames of 16x16 with Tc a multiple of 2 in 2..2, got 2 videos "
     r"of \[2, 1\] frames"),
    (dict(context_frames=[[PIL.Image.new("RGB", (16, 16))] * 2]), r"got 1 videos of \[2\] frames \(RGB 16x16\)"),
    (dict(context_frames=context_of(2) * 2), r"context_frames must hold values in \[0, 1\]"),
    (dict(context_frames=torch.zeros(2, 2, 1, 16, 16, dtype=torch.long)), "floats in .* or uint8"),
    (dict(context_frames="frames.mp4"), r"context_frames must be a torch tensor \[B, Tc, 1, 16, 16\]"),
    (dict(context_frames=context_of(2), class_labels=[0]), "got 1 class labels for 2 context videos"),
    (dict(context_frames=context_of(2), guidance_scale=3.0), "guidance_scale 3.0 needs class_labels"),
    (dict(context_frames=context_of(2), latents=torch.full((2, 2, 4, 4), MASK_ID)),
     "latents and context_frames cannot be combined"),
    (dict(class_labels=[0], num_videos_per_prompt=0), "num_videos_per_prompt must be a positive integer, got 0"),
    (dict(class_labels=[0, 1], generator=[seeded()]), "got 1 generators for 2 videos"),
    (dict(class_labels=[0], output_type="gif"), r"output_type must be one of .*; got 'gif'"),
    (dict(class_labels=[5]), r"class label 5 is out of range"),
    (dict(class_labels=[0], latents=torch.zeros(1, 4, 4, dtype=torch.long)),
     r"latents must be a LongTensor of token ids shaped \[1, 2, 4, 4\]"),
])
def test_bad_input_raises_naming_what_is_allowed(tiny_video_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_video_pipeline(**{"output_type": "latent", **kwargs})


def test_context_needs_fewer_frames_than_the_clip_in_multiples_of_the_temporal_factor():
    pipe = long_video_pipeline()
    with pytest.raises(ValueError, match=r"\[B, Tc, 1, 16, 16\] with Tc a multiple of 2 in 2..6, got \[1, 3, 1"):
        pipe(context_frames=context_of(1, num_frames=3))
    with pytest.raises(ValueError, match=r"in 2..6, got \[1, 8, 1, 16, 16\]"):
        pipe(context_frames=context_of(1, num_frames=8))


def test_components_must_be_a_video_tokenizer_and_a_video_transformer():
    scheduler = MGNTScheduler()
    with pytest.raises(ValueError, match=r"needs a video tokenizer .* and a transformer with a 3-entry token_grid "
                                         r"\(t, h, w\); got an image tokenizer and token_grid \(2, 4, 4\)"):
        MGNTVideoPipeline(make_tiny_video_transformer(), make_tiny_vqvae(), scheduler)
    with pytest.raises(ValueError, match=r"got a video tokenizer and token_grid \(4, 4\)"):
        MGNTVideoPipeline(make_tiny_transformer(), make_tiny_video_vqvae(), scheduler)
    with pytest.raises(ValueError, match=r"the tokenizer makes token grids \(4, 4, 4\) but the transformer takes"):
        MGNTVideoPipeline(make_tiny_video_transformer(), make_tiny_video_vqvae(num_frames=8), scheduler)


def test_a_pipeline_without_tokenizer_generates_token_videos_only(tiny_scheduler):
    pipe = MGNTVideoPipeline(make_tiny_video_transformer(), None, tiny_scheduler)
    pipe.set_progress_bar_config(disable=True)
    assert pipe([0], generator=seeded(), output_type="latent").frames.shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="context_frames need a vqvae"):
        pipe(context_frames=context_of(1), output_type="latent")
    with pytest.raises(ValueError, match="output_type 'np' needs a vqvae"):
        pipe([0])


def test_the_image_pipeline_refuses_to_decode_video_tokens(tiny_scheduler):
    pipe = MGNTPipeline(make_tiny_video_transformer(), make_tiny_video_vqvae(), tiny_scheduler)
    pipe.set_progress_bar_config(disable=True)
    assert pipe([0], generator=seeded(), output_type="latent").images.shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="the tokenizer is a video tokenizer .* use MGNTVideoPipeline"):
        pipe([0], output_type="np")


# ---------------------------------------------------------------- saving, loading, publishing


def test_save_and_load_round_trip_gives_identical_videos(tiny_video_pipeline, tmp_path):
    tiny_video_pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "MGNTVideoPipeline" and index["_module"] == "mgnt_hf.pipeline_mgnt_video"
    loaded = MGNTVideoPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vqvae.config.is_video and loaded.vqvae.config.num_frames == 4
    for inputs in (dict(class_labels=[0, 2]), dict(context_frames=context_of(2))):
        original = tiny_video_pipeline(**inputs, generator=seeded(), output_type="np").frames
        reloaded = loaded(**inputs, generator=seeded(), output_type="np").frames
        assert np.array_equal(original, reloaded)


def test_video_model_card_describes_video_generation(tiny_video_pipeline):
    card = tiny_video_pipeline.create_model_card("user/tiny-video", metrics={"FVD": 321.0})
    assert card.data.library_name == "mgnt_hf" and card.data.license == "mit"
    assert card.data.pipeline_tag is None
    assert {"video-generation", "frame-prediction", "mgnt_hf", "magnets"} <= set(card.data.tags)
    assert 'MGNTVideoPipeline.from_pretrained("user/tiny-video")' in card.text
    assert "2x4x4 (t x h x w)" in card.text and "clips of 4 frames at 16x16 px" in card.text
    assert "| FVD | 321.0 |" in card.text


def test_push_to_hub_uploads_a_loadable_video_pipeline(tiny_video_pipeline, fake_hub_server, tmp_path):
    # Runs the real huggingface_hub client against tests/fake_hub.py; LFS/Xet transfer and auth are not covered.
    tiny_video_pipeline.save_pretrained(tmp_path / "local")
    context = context_of(2)
    np.save(tmp_path / "context.npy", context.numpy())
    expected = tiny_video_pipeline(context_frames=context, generator=seeded(), output_type="latent").frames
    result = run_client(f"""
        import json
        import numpy as np
        import torch
        from mgnt_hf import MGNTVideoPipeline
        MGNTVideoPipeline.from_pretrained({str(tmp_path / "local")!r}).push_to_hub("user/tiny-video")
        pulled = MGNTVideoPipeline.from_pretrained("user/tiny-video")
        pulled.set_progress_bar_config(disable=True)
        context = torch.from_numpy(np.load({str(tmp_path / "context.npy")!r}))
        ids = pulled(context_frames=context, generator=torch.Generator().manual_seed(0), output_type="latent").frames
        print(json.dumps(ids.tolist()))
    """, fake_hub_server, tmp_path)
    files = fake_hub_server.list_files("user/tiny-video")
    assert {"README.md", "model_index.json", "scheduler/scheduler_config.json", "transformer/model.safetensors",
            "vqvae/config.json", "vqvae/model.safetensors"} <= set(files)
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pkl", ".py"))]
    card = fake_hub_server.read_file("user/tiny-video", "README.md").decode()
    assert "library_name: mgnt_hf" in card and "frame-prediction" in card
    assert fake_hub_server.commits("user/tiny-video")[0]["summary"] == "Upload MGNTVideoPipeline"
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected.tolist()
    assert fake_hub_server.unhandled == []


# ---------------------------------------------------------------- export_to_video


def test_export_to_video_writes_gif_and_mp4_from_pipeline_output(tiny_video_pipeline, tmp_path):
    frames = tiny_video_pipeline([0], generator=seeded(), output_type="np").frames[0]  # [4, 16, 16, 1] in [0, 1]
    expected = (frames * 255).round().astype(np.uint8)
    gif = export_to_video(frames, tmp_path / "video.gif", fps=4)
    assert gif == str(tmp_path / "video.gif")
    # Grayscale GIF frames are lossless (read back as RGB); Pillow merges identical consecutive frames, which
    # these are not.
    expected_rgb = np.repeat(expected, 3, axis=-1)
    assert np.array_equal(decode_video(gif), expected_rgb)
    pil = tiny_video_pipeline([0], generator=seeded(), output_type="pil").frames[0]
    assert np.array_equal(decode_video(export_to_video(pil, tmp_path / "pil.gif")), expected_rgb)
    mp4 = decode_video(export_to_video(frames, tmp_path / "video.mp4"))
    assert mp4.shape[:3] == (4, 16, 16)  # H.264 is lossy: shape only


@pytest.mark.parametrize("frames, message", [
    (np.full((4, 16, 16, 1), 1.5, np.float32), r"float frames must be in \[0, 1\]"),
    (np.zeros((2, 4, 16, 16, 1), np.float32), r"one video \[T, H, W, C\] or \[T, H, W\], got shape \[2, 4"),
    ([PIL.Image.new("L", (16, 16)), PIL.Image.new("L", (8, 8))], "PIL frames must share mode and size"),
    ("video.gif", "frames must be a numpy array"),
])
def test_export_to_video_rejects_what_is_not_one_video(frames, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_to_video(frames, tmp_path / "out.gif")
