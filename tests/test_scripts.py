"""The README's first command, `bash scripts/main.sh`, end to end (in its
--quick form: one seed, 20 steps), and the one-model main job's script."""
import os
import subprocess

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name, *args):
  result = subprocess.run(
      ["bash", os.path.join(_REPO, "scripts", name)] + list(args),
      capture_output=True, text=True, timeout=900, cwd=_REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_main_trains_switch_and_dense_side_by_side_and_a_rerun_resumes(
    tmp_path):
  out = _script("main.sh", "--quick", "--work_dir", str(tmp_path))
  results = tmp_path / "quick" / "switch_vs_dense" / "results"
  # Progress of both models, then one table with a row for each.
  assert "dense-seed1: training 20 steps" in out
  assert "switch_32-seed1: training 20 steps" in out
  table = out[out.index("| model |"):].splitlines()
  rows = {line.split("|")[1].strip(): line for line in table[2:]
          if line.startswith("|")}
  assert sorted(rows) == ["dense", "switch_32"]
  # The same curves on disk, and the plot of both.
  for model in ("dense", "switch_32"):
    assert (results / "curves" / ("%s-seed1.csv" % model)).exists()
  assert (results / "validation.png").stat().st_size > 10000
  # A rerun trains nothing again.
  again = _script("main.sh", "--quick", "--work_dir", str(tmp_path))
  assert "training" not in again
  assert again.count("done (curve in") == 2


@pytest.mark.slow
def test_train_runs_the_one_model_main_job(tmp_path):
  out = _script("train.sh", "--model_dir", str(tmp_path / "run"),
                "--steps", "10", "--log_every", "5", "--save_every", "10")
  assert "after 10 steps" in out
  assert os.path.exists(tmp_path / "run" / "checkpoint")
