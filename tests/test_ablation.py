"""The nested-training ablation driver (training/ablations/nested_fashion_mnist.py): what each row runs and
how the table is written. The rows themselves are hours of CPU; they are not run here."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "ablations" / "nested_fashion_mnist.py"


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ablation():
    return load_script(SCRIPT)


def flag_values(command, flag):
    return [command[i + 1] for i, item in enumerate(command) if item == flag]


def test_every_row_changes_only_its_own_setting(ablation, tmp_path):
    args = ablation.parse_args(["--output_dir", str(tmp_path)])
    baseline = ablation.train_command(args, "baseline", tmp_path / "c.json")
    for name, (_, training, overrides) in ablation.ROWS.items():
        command = ablation.train_command(args, name, tmp_path / "c.json")
        for flag in ("--seed", "--distillation_weight", "--distill_from", "--widths_per_step", "--mask_schedule",
                     "--ema_decay", "--max_train_steps", "--train_batch_size", "--learning_rate"):
            assert len(flag_values(command, flag)) == 1, (name, flag)  # never a flag given twice
        differing = {flag for flag in set(command) | set(baseline) if flag.startswith("--")
                     and flag_values(command, flag) != flag_values(baseline, flag)}
        assert differing <= {"--output_dir", *(f"--{key}" for key in training)}, (name, differing)
        assert bool(differing - {"--output_dir"}) or bool(overrides) or name == "baseline", name
    weighted = ablation.train_command(args, "small-widths-weighted", tmp_path / "c.json")
    start = weighted.index("--width_loss_weights")
    assert weighted[start + 1 : start + 5] == ["2.0", "1.5", "1.25", "1.0"]


def test_the_table_is_rewritten_but_notes_below_the_marker_are_kept(ablation, tmp_path):
    row = {"name": "baseline", "description": "the baseline", "train_wall_seconds": 600.0,
           "heldout_cross_entropy": {"16": 3.5, "128": 3.0},
           "samples": {key: {"classifier_fid": 10.0 + i, "class_accuracy": 0.5} for i, key in
                       enumerate(ablation.EVAL_ROWS)}}
    settings = {"proxy_config": ablation.PROXY_CONFIG, "max_train_steps": 200, "train_batch_size": 128,
                "learning_rate": 1e-3, "lr_warmup_steps": 20, "threads": 1, "machine": "cpu", "heldout_images": 2000,
                "samples_per_class": 30, "eval_seed": 100000}
    path = tmp_path / "ablation.md"
    ablation.write_markdown(path, ablation.format_table([row]), settings)
    text = path.read_text()
    assert "| baseline | the baseline | 3.500 | 3.000 | 10.00 | 11.00 | 12.00 | 50.0% | 10.0 |" in text
    path.write_text(text + "\nWhat the rows say.\n")
    ablation.write_markdown(path, ablation.format_table([{**row, "name": "again"}]), settings)
    text = path.read_text()
    assert "| again |" in text and "| baseline |" not in text
    assert text.endswith("\nWhat the rows say.\n")
    json.dumps(settings)  # the settings block is what ablation.json records


VIDEO_SCRIPT = SCRIPT.with_name("video_positions.py")


@pytest.fixture(scope="module")
def video_positions():
    return load_script(VIDEO_SCRIPT)


def test_video_position_rows_differ_only_in_their_embedding_type_and_seed(video_positions, tmp_path):
    args = video_positions.parse_args(["--output_dir", str(tmp_path)])
    reference = video_positions.train_command(args, "joint", tmp_path / "c.json")
    types = set()
    for name, (_, seed, overrides) in video_positions.ROWS.items():
        command = video_positions.train_command(args, name, tmp_path / "c.json")
        differing = {flag for flag in set(command) | set(reference) if flag.startswith("--")
                     and flag_values(command, flag) != flag_values(reference, flag)}
        assert differing <= {"--output_dir", "--seed"}, (name, differing)
        assert flag_values(command, "--seed") == [str(seed)]
        assert flag_values(command, "--context_frames") == ["4"]
        assert set(overrides) == {"position_embedding_type"}
        types.add(overrides["position_embedding_type"])
    assert types == {"joint", "factorized"}


def test_video_position_losses_cover_every_width_and_skip_the_context(video_positions):
    import torch

    from mgnt_hf import MGNTConfig, MGNTTransformer

    torch.manual_seed(0)
    model = MGNTTransformer(MGNTConfig(codebook_size=16, num_classes=3, token_grid=(2, 2, 2), hidden_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                       nested_widths=(8, 16))).eval()
    tokens = torch.randint(0, 16, (6, 8), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(6) % 3
    seen = []

    class Recording(torch.nn.Module):
        config = model.config

        def forward(self, inputs, class_labels, width):
            seen.append(inputs.clone())
            return model(inputs, class_labels, width=width)

    losses = video_positions.heldout_losses(Recording(), tokens, labels, num_context_tokens=4)
    assert set(losses) == {"generation", "prediction"} and set(losses["prediction"]) == {"8", "16"}
    assert all(value > 0 for task in losses.values() for value in task.values())
    mask_id = model.config.mask_token_id
    generation_inputs, prediction_inputs = seen[0], seen[-1]  # one batch per width and task
    assert (generation_inputs[:, :4] == mask_id).any()  # generation may mask the first frame's tokens
    assert not (prediction_inputs[:, :4] == mask_id).any() and (prediction_inputs[:, 4:] == mask_id).any()


def test_video_position_table_lists_both_tasks(video_positions, tmp_path):
    row = {"name": "joint", "description": "d", "parameters": 1234, "train_wall_seconds": 120.0,
           "heldout_cross_entropy": {"generation": {"16": 5.0, "128": 4.5}, "prediction": {"16": 4.0, "128": 3.5}}}
    table = video_positions.format_table([row])
    assert "| joint | d | 1,234 | 5.0000 | 4.5000 | 4.0000 | 3.5000 | 2.0 |" in table
    assert "generation CE w16" in table and "prediction CE w128" in table


def test_video_position_header_names_the_tokenizers_grid_and_chance_level(video_positions, tmp_path):
    settings = {"proxy_config": {"hidden_size": 8}, "vqvae": "pipelines/x/vqvae", "token_grid": [4, 16, 16],
                "codebook_size": 1024, "max_train_steps": 3, "train_batch_size": 2, "context_frames": 4,
                "learning_rate": 1e-3, "lr_warmup_steps": 1, "threads": 1, "machine": "m", "heldout_videos": 5}
    video_positions.write_markdown(tmp_path / "video_positions.md", "| table |", settings)
    text = (tmp_path / "video_positions.md").read_text()
    assert "(4x16x16 tokens, 1024 codes)" in text and "uniform over 1024 codes is 6.931" in text
    assert "4x8x8" not in text and "512" not in text and "| table |" in text


@pytest.fixture(scope="module")
def video_sampling():
    return load_script(SCRIPT.with_name("video_sampling.py"))


def test_video_sampling_rows_differ_only_in_the_sampling_settings_they_name(video_sampling, tmp_path):
    from evaluation_helpers import CONTEXT_FRAMES, make_frame_classifier, make_video_pipeline, moving_squares

    pipeline, (videos, labels) = make_video_pipeline(), moving_squares(6)
    base = dict(pipeline.scheduler.config)
    args = video_sampling.parse_args(["--pipeline", "tiny", "--videos-per-class", "1", "--num-prediction-videos", "2",
                                      "--context-frames", str(CONTEXT_FRAMES), "--docs_dir", str(tmp_path)])
    args.classifier = make_frame_classifier()
    rows = {name: video_sampling.evaluate_setting(pipeline, base, video_sampling.SETTINGS[name], videos, labels, args)
            for name in ("scheduler", "guidance-4", "choice-0")}
    config = pipeline.scheduler.config  # the last row's scheduler: only the choice temperature differs
    assert config.choice_temperature == 0.0 and config.temperature == base["temperature"]
    assert [row["settings"]["guidance_scale"] for row in rows.values()] == [base["guidance_scale"], 4.0,
                                                                            base["guidance_scale"]]
    costs = {row["generation"]["gflops_per_video"] for row in rows.values()}
    assert len(costs) == 1  # sampling settings change no FLOPs
    table = video_sampling.format_table(rows, base)
    assert f"| `choice-0` | 1 | 0 | {base['guidance_scale']:g} |" in table and "| `guidance-4` | 1 | 4.5 | 4 |" in table
