"""EMA weights in checkpoints (`mgnt_hf.training_utils`): written as safetensors, read back exactly, damaged or
mismatched files refused, and the pickles of older checkpoints read without running code."""

import pickle

import pytest
import torch
from torch import nn

from mgnt_hf.training_utils import (
    EMA_STATE_FILE,
    LEGACY_EMA_STATE_FILE,
    EMAModel,
    checkpoint_has_ema,
    load_ema_state,
    save_ema_state,
)


def trained_ema(seed=0, steps=3, decay=0.9):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    ema = EMAModel(model.parameters(), decay=decay)
    for _ in range(steps):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        ema.step(model.parameters())
    return model, ema


def assert_same_state(actual: EMAModel, expected: EMAModel):
    actual_state, expected_state = actual.state_dict(), expected.state_dict()
    assert {k: v for k, v in actual_state.items() if k != "shadow_params"} == \
        {k: v for k, v in expected_state.items() if k != "shadow_params"}
    assert len(actual.shadow_params) == len(expected.shadow_params)
    for a, b in zip(actual.shadow_params, expected.shadow_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_state_round_trips_exactly_through_safetensors(tmp_path):
    _, ema = trained_ema()
    path = save_ema_state(ema, tmp_path)
    assert path == tmp_path / EMA_STATE_FILE and checkpoint_has_ema(tmp_path)
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    _, fresh = trained_ema(seed=1, steps=1, decay=0.5)
    load_ema_state(fresh, tmp_path)
    assert fresh.optimization_step == 3 and fresh.decay == 0.9
    assert_same_state(fresh, ema)
    # The loaded average goes on from the same point: one more identical update gives identical weights.
    model, _ = trained_ema()
    fresh.step(model.parameters())
    ema.step(model.parameters())
    assert_same_state(fresh, ema)


def test_older_checkpoints_pickled_by_accelerate_are_read_without_running_code(tmp_path):
    _, ema = trained_ema()
    torch.save(ema.state_dict(), tmp_path / LEGACY_EMA_STATE_FILE)  # what register_for_checkpointing wrote
    assert checkpoint_has_ema(tmp_path)
    _, fresh = trained_ema(seed=1, steps=1)
    load_ema_state(fresh, tmp_path)
    assert_same_state(fresh, ema)


class RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_legacy_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    with open(tmp_path / LEGACY_EMA_STATE_FILE, "wb") as file:
        pickle.dump({"shadow_params": [RunsCode()]}, file)
    _, ema = trained_ema()
    with pytest.raises(OSError, match="cannot be read as an EMA state"):
        load_ema_state(ema, tmp_path)
    assert "this must never run" not in capsys.readouterr().out


def test_a_damaged_file_is_refused_and_nothing_is_loaded(tmp_path):
    _, ema = trained_ema()
    path = save_ema_state(ema, tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _, fresh = trained_ema(seed=1, steps=1)
    before = [tensor.clone() for tensor in fresh.shadow_params]
    with pytest.raises(OSError, match="is damaged"):
        load_ema_state(fresh, tmp_path)
    for a, b in zip(fresh.shadow_params, before):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_missing_ema_weights_are_an_os_error(tmp_path):
    assert not checkpoint_has_ema(tmp_path)
    with pytest.raises(OSError, match="holds no EMA weights"):
        load_ema_state(trained_ema()[1], tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    _, ema = trained_ema()
    save_ema_state(ema, tmp_path)
    other = EMAModel(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5)).parameters())
    with pytest.raises(ValueError, match=r"do not fit this model: 6 tensors against 4, first difference at index 2"):
        load_ema_state(other, tmp_path)
