"""Rows (`mgnt_hf.evaluation.rows`): row names, rows built by hand, and what the runners share (seeded
generators, batches)."""

import pytest
import torch

from conftest import make_tiny_transformer, make_tiny_vqvae
from evaluation_helpers import make_image_pipeline
from mgnt_hf import MGNTPipeline, MGNTScheduler, WIDTH_SCHEDULE_PRESETS
from mgnt_hf.evaluation import QualityRow, default_rows, parse_row, resolve_rows, row_step_widths, seeded_generators
from mgnt_hf.evaluation.rows import batches, format_schedule, row_summary

DEFAULT_ROW_NAMES = ["maskgit", "width-8", "width-16", "width-32", "default", "default+cache", "reverse+cache"]


# ---------------------------------------------------------------- rows


def test_default_rows_are_baseline_each_smaller_width_default_with_and_without_cache_and_reverse():
    rows = default_rows(make_image_pipeline())
    default = tuple(tuple(segment) for segment in WIDTH_SCHEDULE_PRESETS["magnets"])
    assert [row.name for row in rows] == DEFAULT_ROW_NAMES
    assert rows == [
        QualityRow("maskgit", ((1.0, 12),), False),
        QualityRow("width-8", ((0.125, 12),), False),
        QualityRow("width-16", ((0.25, 12),), False),
        QualityRow("width-32", ((0.5, 12),), False),
        QualityRow("default", default, False),
        QualityRow("default+cache", default, True),
        QualityRow("reverse+cache", default[::-1], True),
    ]


def test_width_rows_follow_the_step_count():
    assert parse_row("width-16", make_image_pipeline(), num_inference_steps=6).width_schedule == ((0.25, 6),)


def test_default_row_is_the_schedulers_configured_schedule():
    pipe = make_image_pipeline()
    pipe.scheduler = MGNTScheduler(width_schedule="half-then-full")
    assert parse_row("default", pipe).width_schedule == ((0.5, 6), (1.0, 6))
    assert parse_row("reverse+cache", pipe).width_schedule == ((1.0, 6), (0.5, 6))


def test_any_preset_is_a_row_with_or_without_cache():
    pipe = make_image_pipeline()
    for name, schedule in WIDTH_SCHEDULE_PRESETS.items():
        expected = tuple(tuple(segment) for segment in schedule)
        assert parse_row(name, pipe) == QualityRow(name, expected, False)
        assert parse_row(name + "+cache", pipe) == QualityRow(name + "+cache", expected, True)


@pytest.mark.parametrize("name, message", [
    ("fastest", "unknown row 'fastest'"),
    ("width-12", "width 12 is not one of nested_widths [8, 16, 32, 64]"),
    ("+cache", "unknown row '+cache'"),
    ("maskgit+cache+cache", "unknown row 'maskgit+cache+cache'"),
])
def test_unknown_rows_are_refused_with_the_allowed_names(name, message):
    with pytest.raises(ValueError, match="allowed: maskgit, default, reverse, width-8") as error:
        parse_row(name, make_image_pipeline())
    assert message in str(error.value)


def test_rows_whose_widths_the_transformer_lacks_are_refused():
    pipe = MGNTPipeline(transformer=make_tiny_transformer(nested_widths=(32, 64)), vqvae=make_tiny_vqvae(),
                        scheduler=MGNTScheduler())
    with pytest.raises(ValueError, match="row 'magnets': width_schedule fraction 0.125 gives width 8"):
        parse_row("magnets", pipe)


# ---------------------------------------------------------------- rows built by hand


def test_a_row_built_by_hand_stores_its_schedule_as_float_int_pairs():
    row = QualityRow("half", [[0.5, 3], [1, 3]], use_cache=True, num_inference_steps=8)
    assert row.width_schedule == ((0.5, 3), (1.0, 3)) and isinstance(row.width_schedule[1][0], float)
    assert row.schedule_list() == [[0.5, 3], [1.0, 3]]
    assert row.steps(12) == 8 and QualityRow("half", [[0.5, 3]]).steps(12) == 12
    assert QualityRow("m", "magnets") == QualityRow("m", tuple(map(tuple, WIDTH_SCHEDULE_PRESETS["magnets"])))


def test_a_row_from_widths_and_back_uses_the_transformers_nested_widths():
    config = make_tiny_transformer().config
    row = QualityRow.from_widths("w16-w64", [(16, 4), (64, 8)], config, use_cache=True)
    assert row == QualityRow("w16-w64", ((0.25, 4), (1.0, 8)), True)
    assert row.segment_widths(config) == [(16, 4), (64, 8)]
    with pytest.raises(ValueError, match="width 12 is not one of nested_widths"):
        QualityRow.from_widths("bad", [(12, 4)], config)


@pytest.mark.parametrize("fields, message", [
    (dict(name="", width_schedule=[[1.0, 4]]), "row name must be a non-empty string"),
    (dict(name="r", width_schedule=[]), "width_schedule must be a non-empty list"),
    (dict(name="r", width_schedule=[[1.5, 4]]), r"must be a number in \(0, 1\]"),
    (dict(name="r", width_schedule=[[1.0, 4]], use_cache=1), "use_cache must be True or False"),
    (dict(name="r", width_schedule=[[1.0, 4]], num_inference_steps=0), "num_inference_steps must be a positive integer"),
])
def test_rows_built_by_hand_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        QualityRow(**fields)


def test_resolve_rows_takes_names_and_rows_and_checks_them_against_the_pipeline():
    pipe = make_image_pipeline()
    own = QualityRow("half-8", [[0.5, 4], [1.0, 4]], num_inference_steps=8)
    rows = resolve_rows(pipe, ["maskgit", own], 12)
    assert rows == [parse_row("maskgit", pipe), own]
    assert resolve_rows(pipe, None, 12) == default_rows(pipe)
    with pytest.raises(ValueError, match="num_inference_steps must be an integer in \\[1, 16\\]"):
        resolve_rows(pipe, [QualityRow("long", [[1.0, 4]], num_inference_steps=17)], 12)
    with pytest.raises(ValueError, match="row 'third': width_schedule fraction"):
        resolve_rows(pipe, [QualityRow("third", [[1 / 3, 4]])], 12)


def test_a_row_with_its_own_step_count_runs_at_it_and_says_so():
    pipe = make_image_pipeline()
    own = QualityRow("half-6", [[0.5, 3], [1.0, 3]], num_inference_steps=6)
    assert row_step_widths(own, pipe, 12) == [32, 32, 32, 64, 64, 64]
    assert row_summary(own, 12) == {"name": "half-6", "width_schedule": [[0.5, 3], [1.0, 3]], "use_cache": False,
                                    "num_inference_steps": 6}
    assert "num_inference_steps" not in row_summary(own, 6)


def test_a_name_ending_in_a_step_count_is_that_row_at_its_own_steps():
    pipe = make_image_pipeline()
    assert parse_row("maskgit-4", pipe) == QualityRow("maskgit-4", ((1.0, 12),), False, num_inference_steps=4)
    assert parse_row("width-16-8+cache", pipe, num_inference_steps=12) == QualityRow(
        "width-16-8+cache", ((0.25, 8),), True, num_inference_steps=8)
    assert parse_row("half-then-full-6+cache", pipe) == QualityRow(
        "half-then-full-6+cache", ((0.5, 6), (1.0, 6)), True, num_inference_steps=6)
    assert parse_row("default-8", pipe).num_inference_steps == 8
    # Without a step count the row still follows the evaluation's, `width-<w>` included.
    assert parse_row("width-16", pipe).num_inference_steps is None


def test_results_tables_show_a_row_at_its_own_step_count_as_it_runs():
    pipe = make_image_pipeline()
    maskgit_4 = parse_row("maskgit-4", pipe)
    assert format_schedule(row_summary(maskgit_4, 12)["width_schedule"], maskgit_4.num_inference_steps) == "1x4"
    half_4 = parse_row("half-then-full-4", pipe)
    assert format_schedule(row_summary(half_4, 12)["width_schedule"], 4) == "0.5x2 1x2"
    assert row_step_widths(half_4, pipe) == [32, 32, 64, 64]
    # A row at the evaluation's step count shows its segments as stored.
    assert format_schedule([[0.5, 6], [1.0, 6]]) == "0.5x6 1x6"


def test_every_frontier_row_but_default_is_its_own_name_parsed():
    from mgnt_hf.evaluation.frontier import DEFAULT_ROW, frontier_rows

    pipe = make_image_pipeline()
    pipe.scheduler = MGNTScheduler(width_schedule="half-then-full")
    for row in frontier_rows(pipe):
        if row.name == DEFAULT_ROW:  # `default` there is the scheduler's cache setting, here no cache
            continue
        parsed = parse_row(row.name, pipe)
        assert parsed.steps(12) == row.steps(12) and parsed.use_cache == row.use_cache, row.name
        assert row_step_widths(parsed, pipe) == row_step_widths(row, pipe), row.name


@pytest.mark.parametrize("name, message", [
    ("maskgit-0", "num_inference_steps must be an integer in \\[1, 16\\]"),
    ("maskgit-17+cache", "num_inference_steps must be an integer in \\[1, 16\\]"),
    ("width-12-4", "width 12 is not one of nested_widths"),
    ("fastest-4", "unknown row 'fastest-4'"),
])
def test_step_count_names_are_checked(name, message):
    with pytest.raises(ValueError, match=message):
        parse_row(name, make_image_pipeline())


# ---------------------------------------------------------------- seeds and batches


def test_seeded_generators_give_sample_j_the_seed_plus_j():
    first = [generator.initial_seed() for generator in seeded_generators("cpu", 5, 3)]
    assert first == [5, 6, 7]
    draws = [torch.rand(2, generator=generator) for generator in seeded_generators("cpu", 7, 1)]
    assert torch.equal(draws[0], torch.rand(2, generator=torch.Generator().manual_seed(7)))


def test_batches_cover_every_index_once_in_order():
    assert batches(7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert batches(0, 3) == []
