"""Study summaries from curves: crossings, speed-ups, clear differences."""
import numpy as np
import pytest

from mtf_switch.studies import report
from mtf_switch.studies import study as study_lib

import helpers

_rows = helpers.curve_rows  # a curve from its losses


def _study():
  return study_lib.Study(name="s", models={"dense": [], "switch": []},
                         seeds=[1, 2], steps=400, eval_every=100)


def test_first_crossing_interpolates_linearly():
  assert report.first_crossing([100, 200, 300], [5, 4, 3], 3.5) == 250
  assert report.first_crossing([100, 200], [5, 4], 6) == 100
  assert report.first_crossing([100, 200], [5, 4], 3) is None


def test_loss_at_step_interpolates_the_seeds_mean():
  runs = {1: _rows([5.0, 4.0, 3.0], 1.0), 2: _rows([6.0, 5.0, 4.0], 1.0)}
  # Mean curve 5.5, 4.5, 3.5 at steps 100, 200, 300.
  assert report.loss_at_step(runs, 200) == pytest.approx(4.5)
  assert report.loss_at_step(runs, 250) == pytest.approx(4.0)
  assert report.loss_at_step(runs, 300) == pytest.approx(3.5)
  assert report.loss_at_step(runs, 301) is None
  assert report.loss_at_step(runs, 50) is None


def test_summary_speedups_against_the_baseline():
  curves = {
      "dense": {1: _rows([5.0, 4.0, 3.5, 3.0], 1.0),
                2: _rows([5.2, 4.2, 3.7, 3.2], 1.0)},     # final mean 3.1
      "switch": {1: _rows([4.0, 3.1, 2.6, 2.5], 1.5),
                 2: _rows([4.0, 3.1, 2.6, 2.5], 1.5)},    # final 2.5
  }
  rows = {r["model"]: r for r in report.summarize(_study(), curves)}
  dense, switch = rows["dense"], rows["switch"]
  assert dense["final_validation_loss"] == pytest.approx(3.1)
  assert dense["final_validation_loss_std"] == pytest.approx(0.1)
  assert dense["step_speedup"] == 1.0
  assert switch["delta_vs_baseline"] == pytest.approx(-0.6)
  assert switch["clear"]  # 0.6 > 2 * max(0.0, 0.1)
  # Switch reaches 3.1 at step 200 (3.1 exactly): 400 / 200 = 2x in steps.
  assert switch["steps_to_baseline"] == 200
  assert switch["step_speedup"] == 2.0
  # Its runs' seconds (1.5 s a step against dense's 1.0) were not timed
  # side by side: no wall-time figure in the row or the table.
  assert not {"seconds_to_baseline", "time_speedup",
              "step_seconds"} & set(switch)
  markdown = report.markdown_table(_study(), list(rows.values()))
  assert "| switch | 2 | 2.5000 +- 0.0000 | -0.6000 | yes | 200 | 2.0 |" in (
      markdown)
  assert "speed-up | seconds" not in markdown
  assert "No wall-time column" in markdown


def test_a_difference_within_twice_the_spread_is_not_clear():
  curves = {"dense": {1: _rows([3.0], 1.0), 2: _rows([3.4], 1.0)},
            "switch": {1: _rows([3.1], 1.0), 2: _rows([3.1], 1.0)}}
  switch, = [r for r in report.summarize(_study(), curves)
             if r["model"] == "switch"]
  assert switch["delta_vs_baseline"] == pytest.approx(-0.1)
  assert not switch["clear"]
  markdown = report.markdown_table(_study(), [switch])
  assert "| switch | 2 | 3.1000 +- 0.0000 | -0.1000 | no |" in markdown


def test_a_single_seed_shows_its_loss_without_a_spread_or_a_verdict():
  curves = {"dense": {1: _rows([3.5], 1.0)}, "switch": {1: _rows([3.2], 1.0)}}
  rows = report.summarize(_study(), curves)
  markdown = report.markdown_table(_study(), rows)
  assert "| switch | 1 | 3.2000 | -0.3000 |  |" in markdown
  assert "+-" not in markdown.split("\n", 3)[3]


def test_mean_curve_truncates_to_the_shortest_run():
  steps, mean, std = report.mean_curve(
      {1: _rows([4.0, 3.0, 2.0], 1.0), 2: _rows([6.0, 5.0], 1.0)},
      "validation_loss")
  np.testing.assert_array_equal(steps, [100, 200])
  np.testing.assert_allclose(mean, [5.0, 4.0])
  np.testing.assert_allclose(std, [1.0, 1.0])


def _ladder_study(ladder=("switch_2", "switch_4", "switch_8", "switch_16")):
  return study_lib.Study(
      name="s", models={"dense": [], "switch_2": [], "switch_4": [],
                        "switch_8": [], "switch_16": []},
      seeds=[1, 2], steps=100, eval_every=100, ladder=ladder)


def _ladder_curves():
  # Finals: dense 3.5, switch_2 3.4 +- 0.01, switch_4 3.3 +- 0.01 (clear),
  # switch_16 3.28 +- 0.02 (within twice the larger std), no switch_8 runs.
  return {"dense": {1: _rows([3.5], 1.0), 2: _rows([3.5], 1.0)},
          "switch_2": {1: _rows([3.39], 1.0), 2: _rows([3.41], 1.0)},
          "switch_4": {1: _rows([3.29], 1.0), 2: _rows([3.31], 1.0)},
          "switch_16": {1: _rows([3.26], 1.0), 2: _rows([3.30], 1.0)}}


def test_ladder_compares_each_model_with_the_one_before_it():
  rows = {r["model"]: r
          for r in report.summarize(_ladder_study(), _ladder_curves())}
  assert "previous" not in rows["switch_2"]
  assert rows["switch_4"]["previous"] == "switch_2"
  assert rows["switch_4"]["delta_vs_previous"] == pytest.approx(-0.1)
  assert rows["switch_4"]["clear_vs_previous"] is True
  # switch_8 has no runs: switch_16 is compared with switch_4.
  assert rows["switch_16"]["previous"] == "switch_4"
  assert rows["switch_16"]["delta_vs_previous"] == pytest.approx(-0.02)
  assert rows["switch_16"]["clear_vs_previous"] is False  # 0.02 < 2 * 0.02
  markdown = report.markdown_table(
      _ladder_study(), [rows[m] for m in ("switch_16", "dense", "switch_4")])
  # In the ladder's order, whatever the rows' order.
  assert ("| switch_4 | switch_2 | -0.1000 | yes |\n"
          "| switch_16 | switch_4 | -0.0200 | no |") in markdown


def test_ladder_with_one_seed_is_not_judged():
  curves = {m: {1: runs[1]} for m, runs in _ladder_curves().items()}
  rows = {r["model"]: r
          for r in report.summarize(_ladder_study(), curves)}
  assert rows["switch_4"]["clear_vs_previous"] == ""


def test_ladder_plot_is_written(tmp_path):
  paths = report.plot(_ladder_study(), _ladder_curves(), str(tmp_path))
  ladder_png = str(tmp_path / "ladder.png")
  assert ladder_png in paths
  with open(ladder_png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  no_ladder = str(tmp_path / "none")
  (tmp_path / "none").mkdir()
  assert not any(p.endswith("ladder.png") for p in report.plot(
      _study(), {"dense": _ladder_curves()["dense"]}, no_ladder))


@pytest.mark.parametrize("ladder", [("switch_2",), ("switch_2", "switch_3"),
                                    ("switch_2", "switch_2")])
def test_a_bad_ladder_is_refused_naming_it(ladder):
  with pytest.raises(ValueError, match="ladder .*switch_2"):
    _ladder_study(ladder)
