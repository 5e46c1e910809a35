"""benchmarks/study_step_time.py: what it makes of measured step times."""
import pytest

import helpers

_rows = helpers.curve_rows  # a curve from its losses


def _benchmark():
  return helpers.benchmark("study_step_time")


def test_rows_give_time_to_the_baselines_loss_and_loss_in_its_time():
  times = {"dense": [1.0, 1.1, 0.9], "switch": [1.25, 1.3, 1.2]}
  summary = {"dense": 400, "switch": 200}
  curves = {"dense": {1: _rows([5.0, 4.0, 3.5, 3.0])},
            "switch": {1: _rows([4.0, 3.0, 2.6, 2.5]),
                       2: _rows([4.2, 3.2, 2.8, 2.7])}}
  rows = {r["model"]: r for r in _benchmark().rows(
      times, "dense", summary, curves, study_steps=400)}
  dense, switch = rows["dense"], rows["switch"]
  assert switch["vs_baseline"] == pytest.approx(1.25)
  # 200 steps at 1.25 s against dense's 400 at 1.0 s.
  assert switch["seconds_to_baseline_final"] == pytest.approx(250.0)
  assert switch["time_speedup"] == pytest.approx(1.6)
  # Dense's 400 s buy Switch 320 steps: its mean curve (4.1, 3.1, 2.7, 2.6)
  # at step 320 is 2.7 - 0.2 * 0.1.
  assert switch["steps_in_baseline_time"] == 320
  assert switch["loss_in_baseline_time"] == pytest.approx(2.68)
  assert dense["steps_in_baseline_time"] == 400
  assert dense["loss_in_baseline_time"] == pytest.approx(3.0)


def test_loss_in_time_is_empty_past_a_models_last_evaluation():
  times = {"dense": [1.0], "fast": [0.5]}
  curves = {"dense": {1: _rows([4.0, 3.0])}, "fast": {1: _rows([4.5, 3.5])}}
  rows = {r["model"]: r for r in _benchmark().rows(
      times, "dense", {"dense": 200}, curves, study_steps=200)}
  assert rows["fast"]["steps_in_baseline_time"] == 400
  assert rows["fast"]["loss_in_baseline_time"] == ""
  assert rows["fast"]["time_speedup"] == ""  # never reaches dense's loss
