"""The main job end to end: trains, checkpoints, resumes after a kill."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import helpers  # graph mode, compat shim; event files
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.training import train


def _main_job(model_dir, *args, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE):
  return subprocess.Popen(
      [sys.executable, "-m", "mtf_switch.training.train", "--model_dir", model_dir,
       "--log_every", "10", "--save_every", "10"] + list(args),
      stdout=stdout, stderr=stderr, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _finish(process):
  out, err = process.communicate(timeout=900)
  assert process.returncode == 0, err[-3000:]
  return out


class _Started:
  """A main job started at once, its output in files (not pipes: a job
  waited for later must not block on a full pipe meanwhile)."""

  def __init__(self, model_dir, *args):
    self._out = tempfile.TemporaryFile("w+")
    self._err = tempfile.TemporaryFile("w+")
    self.process = _main_job(model_dir, *args, stdout=self._out,
                             stderr=self._err)

  def output(self):
    """Waits for the job; returns its stdout."""
    self.process.wait(timeout=900)
    self._err.seek(0)
    assert self.process.returncode == 0, self._err.read()[-3000:]
    self._out.seek(0)
    return self._out.read()


def _perplexities(out):
  return [float(line.rsplit(":", 1)[1]) for line in out.splitlines()
          if line.startswith("validation neg. log perplexity")]


def _logged_steps(out):
  return [int(line.split()[1].split("/")[0]) for line in out.splitlines()
          if line.startswith("step ")]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
  """A fresh run of the main job killed after its checkpoint at step 40,
  then started again to finish at step 50.

  Returns:
    (model_dir, stdout of the killed run, stdout of the resumed run).  The
    tests below share it: the second fine-tunes and distills its weights.
  """
  tmp_path = tmp_path_factory.mktemp("main_job")
  model_dir = str(tmp_path / "run")
  # Files, not pipes: nothing reads the killed run's output while it runs.
  # Its stdout holds whole progress reports only: each ends with a flush.
  with open(tmp_path / "killed.out", "w") as out, open(
      tmp_path / "killed.err", "w") as err:
    process = _main_job(model_dir, "--steps", "400", stdout=out, stderr=err)
    deadline = time.time() + 600
    while not (tf.train.latest_checkpoint(model_dir) or "").endswith("-40"):
      assert time.time() < deadline and process.poll() is None, (
          (tmp_path / "killed.err").read_text()[-3000:])
      time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
  killed = (tmp_path / "killed.out").read_text()
  resumed = _finish(_main_job(model_dir, "--steps", "50"))
  return model_dir, killed, resumed


@pytest.mark.slow
def test_main_job_trains_checkpoints_and_resumes_after_a_kill(
    killed_and_resumed):
  model_dir, killed, out = killed_and_resumed
  # The fresh run: progress every 10 steps, each report naming both Switch
  # layers (2 layers x every log), until it was killed.
  assert "step 10/400  loss" in killed and "tokens/s" in killed
  logged = _logged_steps(killed)
  assert logged[:4] == [10, 20, 30, 40]
  assert killed.count("SwitchFeedForward: dropped") == 2 * len(logged)
  (before,) = _perplexities(killed)  # killed before its final evaluation
  tags = helpers.summary_scalars(model_dir)
  assert any(t.endswith("SwitchFeedForward/dropped_fraction") for t in tags)
  with open(os.path.join(model_dir, "operative_config.gin")) as f:
    operative = f.read()
  assert "SwitchFeedForward.num_experts = %num_experts" in operative
  assert "num_experts = 4" in operative

  # Killed mid-run, started again: it continues from its last checkpoint.
  resumed_at = int(out.split("resuming from ")[1].split("(step ")[1]
                   .split(")")[0])
  assert 40 <= resumed_at < 50
  # It logs every 10 steps from where it resumed: only step 50 is left.
  assert _logged_steps(out) == [50]
  assert out.count("SwitchFeedForward: dropped") == 2
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-50")
  (after,) = _perplexities(out)
  assert after > before + 0.5  # log perplexity falls by at least 0.5 nat

  # Fewer total steps than it has done: refused, not "after 10 steps".
  error = helpers.refused("mtf_switch.training.train", "--model_dir",
                          model_dir, "--steps", "10")
  assert error == ("--steps 10: the run in %s is at step 50 already; give "
                   "the total steps, 50 or more" % model_dir)
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-50")


@pytest.mark.slow
def test_a_correct_run_logs_no_warning_or_error_lines(tmp_path):
  # TensorFlow's C++ log at its default level (scripts/env.sh turns its
  # warnings off), and four saves, one past the Saver's max_to_keep (its
  # deletion logs a deprecation).
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run(
      [sys.executable, "-m", "mtf_switch.training.train", "--model_dir",
       str(tmp_path / "run"), "--steps", "40", "--log_every", "10",
       "--save_every", "10"], capture_output=True, text=True, timeout=900,
      env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "saved %s" % (tmp_path / "run" / "model.ckpt-40") in result.stdout
  assert helpers.warning_lines(result.stdout + result.stderr) == []


@pytest.mark.slow
def test_main_job_fine_tunes_and_distills_from_a_checkpoint(
    killed_and_resumed, tmp_path, capsys):
  pretrained = killed_and_resumed[0]  # trained 50 steps, not written below
  finetune = ["--init_checkpoint", pretrained, "--gin_file",
              "models/switch_tiny.gin", "--gin_file", "finetune/switch.gin",
              "--task", "mtf_switch_default_docstring_summary",
              "--input_length", "64", "--target_length", "16",
              "--learning_rate", "1e-3"]
  # The distillation and the fine-tuning run side by side.
  distilled = str(tmp_path / "distilled")
  distillation = _Started(distilled, "--steps", "10", "--distill_from",
                          pretrained)
  finetuned = str(tmp_path / "fine")
  finetuning = _Started(finetuned, "--steps", "10", "--metrics",
                        "--metric_batches", "1", *finetune)

  # Meanwhile: a model of another shape is refused before anything is
  # written (the job's main in this process).
  refused = str(tmp_path / "refused")
  with pytest.raises(SystemExit) as exit_info:
    train.main(["--model_dir", refused, "--steps", "10", *finetune,
                "--gin_param",
                "mtf_switch.SwitchFeedForward.hidden_size = 48"])
  assert exit_info.value.code == 2
  assert "model.ckpt-50 does not fit this model" in capsys.readouterr().err
  assert not os.path.exists(refused)

  out = distillation.output()
  assert "distilling %s into its dense twin" % pretrained in out
  assert "weights from %s/model.ckpt-50" % pretrained in out
  # The student is dense: the only Switch layers reported are the teacher's.
  assert "teacher/encoder/block_000/layer_003/SwitchFeedForward" in out
  assert "\n  encoder/block_000/layer_003/SwitchFeedForward" not in out
  (after,) = _perplexities(out)
  assert -7.0 < after < 0

  out = finetuning.output()
  assert "weights from %s/model.ckpt-50" % pretrained in out
  assert "step 10/10  loss" in out
  metrics = out.split("validation metrics after 10 steps: ")[1]
  assert "examples 16" in metrics and "rouge1 " in metrics
  assert tf.train.latest_checkpoint(finetuned).endswith("model.ckpt-10")


def test_main_job_refuses_a_negative_number_of_skips(capsys):
  with pytest.raises(SystemExit) as exit_info:
    train.main(["--skip_nonfinite_steps", "-1"])
  assert exit_info.value.code == 2
  assert ("argument --skip_nonfinite_steps: -1: give 0 or a positive "
          "integer" in capsys.readouterr().err)


@pytest.mark.parametrize("args,named", [
    # The flags' own types.
    (["--steps", "-5"], "argument --steps: -5: give a positive integer"),
    (["--learning_rate", "-1"],
     "argument --learning_rate: -1: give a finite number > 0"),
    (["--distill_fraction", "0.5"],
     "--distill_fraction 0.5 weighs a teacher: give --distill_from"),
    (["--distill_from", "/nonexistent", "--distill_fraction", "2"],
     "--distill_fraction 2.0: fraction_soft must be in [0, 1), got 2.0"),
    # The library's checks as the job sets up, before any graph.
    (["--batch_size", "0"], "batch_size=0: give a positive int"),
    (["--mesh_shape", "batch:x"],
     "mesh shape 'batch:x': give mesh axes as name:size pairs"),
    (["--gin_file", "nope.gin"], "Unable to open file: nope.gin."),
    (["--gin_param", "mtf_switch.Nope.x = 1"],
     "No configurable matching 'mtf_switch.Nope'"),
    (["--task", "nope"], "unknown task or mixture 'nope'"),
    (["--init_checkpoint", "/nonexistent"],
     "no checkpoint at '/nonexistent': give a model dir holding one"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_main_job_refuses_bad_values_in_one_line(tmp_path, args, named):
  model_dir = str(tmp_path / "run")
  error = helpers.refused("mtf_switch.training.train", "--model_dir",
                          model_dir, *args)
  assert named in error
  assert not os.path.exists(model_dir)


def test_main_job_refuses_a_checkpoint_of_another_vocabulary(tmp_path):
  pretrained = tmp_path / "pretrained"
  pretrained.mkdir()
  (pretrained / "model.ckpt-5.index").write_text("")
  (pretrained / "vocabulary.json").write_text(
      '{"class": "SentencePieceVocabulary", "sha256": "0", "task": "other", '
      '"vocab_size": 32128}')
  error = helpers.refused(
      "mtf_switch.training.train", "--model_dir", str(tmp_path / "run"),
      "--init_checkpoint", str(pretrained / "model.ckpt-5"))
  assert error.startswith("the checkpoint in %s was trained with another "
                          "vocabulary (SentencePieceVocabulary, size 32128, "
                          "of task other)" % pretrained)


@pytest.mark.slow
def test_main_job_skips_non_finite_steps_then_stops_non_zero(tmp_path):
  process = _main_job(str(tmp_path / "run"), "--steps", "50",
                      "--learning_rate", "1e4", "--skip_nonfinite_steps", "2")
  out, err = process.communicate(timeout=900)
  assert process.returncode != 0
  skipped = [line for line in out.splitlines() if " skipped: " in line]
  assert [line.split("(")[1] for line in skipped] == [
      "1 skipped in this run)", "2 skipped in this run)",
      "3 skipped in this run)"]
  assert "3 steps in a row skipped; stopped without saving" in err


def test_main_job_refuses_devices_that_do_not_fit_the_mesh(capsys):
  with pytest.raises(SystemExit) as exit_info:
    train.main(["--mesh_shape", "batch:1,experts:2", "--mesh_devices",
                "cpu:0"])
  assert exit_info.value.code == 2
  assert ("--mesh_devices=cpu:0: 1 mesh devices ['/device:CPU:0'] for mesh"
          in capsys.readouterr().err)


@pytest.mark.slow
def test_main_job_on_two_virtual_cpus_logs_the_losses_of_one_device(
    tmp_path):
  args = ("--steps", "20", "--mesh_shape", "batch:2", "--layout",
          "batch:batch;experts:batch")
  one_device = _Started(str(tmp_path / "one"), *args)
  two_devices = _Started(str(tmp_path / "two"), *args,
                         "--mesh_devices", "cpu:0,cpu:1")
  want, got = one_device.output(), two_devices.output()
  losses = [line.split("loss ")[1].split()[0] for line in want.splitlines()
            if line.startswith("step ")]
  assert len(losses) == 2
  assert [line.split("loss ")[1].split()[0] for line in got.splitlines()
          if line.startswith("step ")] == losses
  assert _perplexities(got) == _perplexities(want)
