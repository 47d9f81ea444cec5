"""utils.checks (the one home of argument rules) and resources.shipped (finding what ships by name)."""

import math
import subprocess
import sys

import numpy as np
import pytest

from mgnt_hf import MGNTPipeline, shipped
from mgnt_hf.resources import available
from mgnt_hf.utils.checks import (check_choice, check_finite_number, check_guidance_scale, check_non_negative_int,
                                  check_positive_int)


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_positive_int_accepts_integers_from_one_and_returns_python_ints(value):
    assert check_positive_int("n", value) == int(value) and type(check_positive_int("n", value)) is int


@pytest.mark.parametrize("value", [0, -2, True, 1.0, "3", None])
def test_positive_int_refuses_everything_else_naming_the_argument_and_value(value):
    with pytest.raises(ValueError, match=rf"^n must be a positive integer, got {value!r}$"):
        check_positive_int("n", value)


def test_positive_int_may_allow_none():
    assert check_positive_int("n", None, allow_none=True) is None
    with pytest.raises(ValueError, match="a positive integer or None"):
        check_positive_int("n", 0, allow_none=True)


def test_non_negative_int():
    assert check_non_negative_int("k", 0) == 0
    for bad in (-1, False, 0.0):
        with pytest.raises(ValueError, match="k must be a non-negative integer"):
            check_non_negative_int("k", bad)


def test_finite_number_bounds():
    assert check_finite_number("x", 2) == 2.0 and type(check_finite_number("x", 2)) is float
    assert check_finite_number("x", 0, minimum=0) == 0.0
    with pytest.raises(ValueError, match=r"x must be a finite number > 0 and <= 1, got 0"):
        check_finite_number("x", 0, minimum=0, maximum=1, exclusive_minimum=True)
    with pytest.raises(ValueError, match=r"<= 1, got 1.5"):
        check_finite_number("x", 1.5, maximum=1)
    for bad in (math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="x must be a finite number"):
            check_finite_number("x", bad)


def test_choice_and_guidance_scale():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode must be one of 'a', 'b'; got 'c'"):
        check_choice("mode", "c", ("a", "b"))
    assert check_guidance_scale(0) == 0.0 and check_guidance_scale(2.5) == 2.5
    for bad in (-0.1, math.nan, True):
        with pytest.raises(ValueError, match=r"guidance_scale must be a finite number >= 0 \(1 = no guidance\)"):
            check_guidance_scale(bad)


def test_shipped_finds_every_shipped_folder_and_the_card_template():
    assert {"mgnt-fashion-mnist", "mgnt-moving-fashion-mnist", "fashion-mnist-classifier",
            "moving-fashion-mnist-frame-classifier"} <= set(available())
    assert (shipped("mgnt-fashion-mnist") / "model_index.json").is_file()
    assert (shipped("fashion-mnist-classifier") / "config.json").is_file()
    assert shipped("model_card.md").is_file()


def test_shipped_refuses_unknown_names_and_paths():
    with pytest.raises(OSError, match="'no-such-model' is not shipped.*available: .*mgnt-fashion-mnist"):
        shipped("no-such-model")
    for bad in ("../pipelines", "", 3):
        with pytest.raises(ValueError, match="bare name"):
            shipped(bad)


def test_shipped_pipeline_loads_from_any_working_directory(tmp_path):
    code = ("import mgnt_hf; p = mgnt_hf.MGNTPipeline.from_pretrained(mgnt_hf.shipped('mgnt-fashion-mnist')); "
            "print(p.transformer.config.hidden_size)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(MGNTPipeline.from_pretrained(shipped("mgnt-fashion-mnist")).transformer.config.hidden_size)
