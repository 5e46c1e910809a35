"""The study runner end to end: curves, summary and plots; resume after a
kill; finished runs skipped."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import helpers
import pytest

from mtf_switch.training import local_servers

_TINY = ["d_model = 16", "d_ff = 32", "num_heads = 2", "d_kv = 8"]
STUDY = """
import mtf_switch.studies.study
mtf_switch.Study.name = "tiny"
mtf_switch.Study.task = "mtf_switch_default_lm"
mtf_switch.Study.models = %(models)r
mtf_switch.Study.seeds = [1]
mtf_switch.Study.steps = %(steps)d
mtf_switch.Study.eval_every = %(eval_every)d
mtf_switch.Study.eval_batches = 2
mtf_switch.Study.batch_size = 4
mtf_switch.Study.target_length = 16
mtf_switch.Study.shuffle_buffer_size = 1000
"""


def _study_file(tmp_path, steps, eval_every, switch=True, distill=False):
  models = {"dense": ["models/lm_dense_small.gin"] + _TINY}
  switch_4 = ["models/lm_switch_small.gin", "num_experts = 4",
              "mtf_switch.SwitchFeedForward.group_size = 32"] + _TINY
  if switch:
    models["switch_4"] = switch_4
  text = STUDY % dict(models=models, steps=steps, eval_every=eval_every)
  if distill:  # teacher and student only
    models = {"switch_4": switch_4, "student": switch_4}
    text = (STUDY % dict(models=models, steps=steps, eval_every=eval_every)
            + 'mtf_switch.Study.teachers = {"student": "switch_4"}\n'
            'mtf_switch.Study.baseline = "switch_4"\n')
  path = tmp_path / "tiny.gin"
  path.write_text(text)
  return str(path)


def _command(study_file, tmp_path, *extra):
  return [sys.executable, "-m", "mtf_switch.studies.run_study", "--study",
          study_file, "--work_dir", str(tmp_path / "work"), "--results_dir",
          str(tmp_path / "results")] + list(extra)


def _run(command, clean_logs=False):
  """Runs the study runner, which must succeed (and print no line that
  reads like a warning or an error, if `clean_logs`); returns its stdout."""
  # TensorFlow's C++ log at its default level: its warnings show.
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run(command, capture_output=True, text=True,
                          timeout=900, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  if clean_logs:
    assert helpers.warning_lines(result.stdout + result.stderr) == []
  return result.stdout


def _curve(tmp_path, run):
  with open(tmp_path / "results" / "curves" / (run + ".csv")) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_step_study_writes_curves_summary_and_plots(tmp_path):
  study_file = _study_file(tmp_path, steps=4, eval_every=2)
  out = _run(_command(study_file, tmp_path), clean_logs=True)
  assert "[1/2] dense-seed1: training 4 steps" in out
  assert "[2/2] switch_4-seed1: finished" in out
  for run in ("dense-seed1", "switch_4-seed1"):
    rows = _curve(tmp_path, run)
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(float(r["validation_loss"]) > 0 for r in rows)
    assert float(rows[1]["train_seconds"]) > float(rows[0]["train_seconds"])
  assert _curve(tmp_path, "dense-seed1")[0]["router_confidence"] == ""
  switch = _curve(tmp_path, "switch_4-seed1")[0]
  assert 0.25 <= float(switch["router_confidence"]) <= 1.0
  with open(tmp_path / "results" / "summary.csv") as f:
    summary = {r["model"]: r for r in csv.DictReader(f)}
  assert set(summary) == {"dense", "switch_4"}
  assert float(summary["switch_4"]["delta_vs_baseline"]) == pytest.approx(
      float(summary["switch_4"]["final_validation_loss"])
      - float(summary["dense"]["final_validation_loss"]), abs=2e-4)
  for name in ("summary.md", "validation.png", "routing.png"):
    assert os.path.getsize(tmp_path / "results" / name) > 0
  # Finished runs are skipped.
  out = _run(_command(study_file, tmp_path))
  assert "[1/2] dense-seed1: done" in out and "training" not in out


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
  study_file = _study_file(tmp_path, steps=60, eval_every=10, switch=False)
  run_dir = tmp_path / "work" / "tiny" / "dense-seed1"
  process = subprocess.Popen(
      _command(study_file, tmp_path), stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL, start_new_session=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  deadline = time.time() + 600
  while not (run_dir / "checkpoint").exists() or "-20" not in (
      run_dir / "checkpoint").read_text():
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.2)
  os.killpg(process.pid, signal.SIGKILL)  # the runner and its child
  process.wait()
  assert not (tmp_path / "results" / "curves" / "dense-seed1.csv").exists()
  out = _run(_command(study_file, tmp_path))
  resumed_at = int(out.split("resuming from ")[1].split("(step ")[1]
                   .split(")")[0])
  assert 20 <= resumed_at < 60
  rows = _curve(tmp_path, "dense-seed1")
  assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
  seconds = [float(r["train_seconds"]) for r in rows]
  assert seconds == sorted(seconds)


@pytest.mark.slow
def test_a_student_is_distilled_from_its_teachers_run(tmp_path):
  study_file = _study_file(tmp_path, steps=2, eval_every=2, distill=True)
  out = _run(_command(study_file, tmp_path), clean_logs=True)
  teacher = tmp_path / "work" / "tiny" / "switch_4-seed1" / "model.ckpt-2"
  assert "distilling from %s" % teacher in out
  student = _curve(tmp_path, "student-seed1")
  assert [int(r["step"]) for r in student] == [2]
  # The student is dense: its teacher's routing is not its own.
  assert student[0]["router_confidence"] == ""
  # On a machine without the teacher's checkpoint, the teacher trains again,
  # its committed curve untouched.
  for run in ("switch_4-seed1", "student-seed1"):
    shutil.rmtree(tmp_path / "work" / "tiny" / run)
  os.remove(tmp_path / "results" / "curves" / "student-seed1.csv")
  teacher_curve = _curve(tmp_path, "switch_4-seed1")
  out = _run(_command(study_file, tmp_path))
  assert ("student-seed1: training switch_4-seed1 first, which it starts "
          "from" in out)
  assert "distilling from %s" % teacher in out
  assert _curve(tmp_path, "switch_4-seed1") == teacher_curve
  assert _curve(tmp_path, "student-seed1")[0]["validation_loss"]


@pytest.mark.slow
def test_upcycled_and_continued_runs_train_on_from_the_dense_run(tmp_path):
  models = {"dense": ["models/lm_dense_small.gin"] + _TINY,
            "upcycled": ["models/lm_switch_small.gin", "num_experts = 4",
                         "mtf_switch.SwitchFeedForward.group_size = 32"]
                        + _TINY,
            "more": ["models/lm_dense_small.gin"] + _TINY}
  study_file = tmp_path / "tiny.gin"
  study_file.write_text(
      STUDY % dict(models=models, steps=2, eval_every=2)
      + 'mtf_switch.Study.upcycle_from = {"upcycled": "dense"}\n'
      'mtf_switch.Study.continue_from = {"more": "dense"}\n'
      'mtf_switch.Study.baseline = "more"\n')
  out = _run(_command(str(study_file), tmp_path), clean_logs=True)
  dense = tmp_path / "work" / "tiny" / "dense-seed1" / "model.ckpt-2"
  assert "weights upcycled from %s" % dense in out
  assert "weights from %s (optimizer state" % dense in out
  # Their curves go on from the dense run's last step.
  for run in ("upcycled-seed1", "more-seed1"):
    assert [int(r["step"]) for r in _curve(tmp_path, run)] == [4]
  assert [int(r["step"]) for r in _curve(tmp_path, "dense-seed1")] == [2]


def _refused(tmp_path, study_file):
  return helpers.refused("mtf_switch.studies.run_study", "--study",
                         study_file, "--work_dir", str(tmp_path / "work"),
                         "--results_dir", str(tmp_path / "results"))


def test_bad_studies_are_refused_in_one_line_before_any_run(tmp_path):
  missing = str(tmp_path / "nope.gin")
  assert _refused(tmp_path, missing).startswith(
      "--study %s: Unable to open file: %s." % (missing, missing))
  study_file = _study_file(tmp_path, steps=4, eval_every=3)
  assert _refused(tmp_path, study_file) == (
      "--study %s: eval_every=3 must divide steps=4" % study_file)
  # A model's gin config, checked before the first run's child starts.
  with open(study_file, "w") as f:
    f.write(STUDY % dict(models={"dense": ["models/nope.gin"]}, steps=4,
                         eval_every=2))
  assert _refused(tmp_path, study_file).startswith(
      "--study %s: model dense of study tiny: Unable to open file: "
      "models/nope.gin." % study_file)
  # A run dir of another configuration in the work dir.
  study_file = _study_file(tmp_path, steps=4, eval_every=2)
  run_dir = tmp_path / "work" / "tiny" / "dense-seed1"
  run_dir.mkdir(parents=True)
  (run_dir / "run_config.json").write_text('{"steps": 2}')
  assert "%s holds a run of another configuration" % run_dir in _refused(
      tmp_path, study_file)
  assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_study_on_a_cluster_draws_the_curves_of_one_process(tmp_path):
  study_file = _study_file(tmp_path, steps=4, eval_every=2)
  mesh = ["--mesh_shape", "batch:2", "--layout", "batch:batch;experts:batch"]
  _run(_command(study_file, tmp_path, *mesh))
  one_process = {run: _curve(tmp_path, run)
                 for run in ("dense-seed1", "switch_4-seed1")}
  shutil.rmtree(tmp_path / "work")
  shutil.rmtree(tmp_path / "results")
  with local_servers.LocalServers(2, threads=1) as servers:
    _run(_command(study_file, tmp_path, "--cluster",
                  ",".join(servers.cluster.addresses), *mesh))
  for run, want in one_process.items():
    got = _curve(tmp_path, run)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for column in ("train_loss", "validation_loss"):
      assert [float(r[column]) for r in got] == pytest.approx(
          [float(r[column]) for r in want], rel=1e-6), (run, column)
