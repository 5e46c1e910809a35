"""The main job end to end: trains, checkpoints, resumes after a kill."""
import os
import signal
import subprocess
import sys
import time

import helpers  # noqa: F401  (graph mode, compat shim)
import pytest
import tensorflow.compat.v1 as tf


def _main_job(model_dir, *args):
  return subprocess.Popen(
      [sys.executable, "-m", "mtf_switch.train", "--model_dir", model_dir,
       "--log_every", "10", "--save_every", "10"] + list(args),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _finish(process):
  out, err = process.communicate(timeout=900)
  assert process.returncode == 0, err[-3000:]
  return out


def _perplexities(out):
  return [float(line.rsplit(":", 1)[1]) for line in out.splitlines()
          if line.startswith("validation neg. log perplexity")]


@pytest.mark.slow
def test_main_job_trains_checkpoints_and_resumes_after_a_kill(tmp_path):
  model_dir = str(tmp_path / "run")
  out = _finish(_main_job(model_dir, "--steps", "40"))
  assert "step 10/40  loss" in out and "tokens/s" in out
  assert out.count("SwitchFeedForward: dropped") == 8  # 2 layers x 4 logs
  before, after = _perplexities(out)
  assert after > before + 0.5  # log perplexity falls by at least 0.5 nat
  events = [f for f in os.listdir(model_dir) if "tfevents" in f]
  tags = {v.tag for f in events
          for e in tf.train.summary_iterator(os.path.join(model_dir, f))
          for v in e.summary.value}
  assert any(t.endswith("SwitchFeedForward/dropped_fraction") for t in tags)
  with open(os.path.join(model_dir, "operative_config.gin")) as f:
    operative = f.read()
  assert "SwitchFeedForward.num_experts = %num_experts" in operative
  assert "num_experts = 4" in operative

  # Killed mid-run, started again: it continues from its last checkpoint.
  process = _main_job(model_dir, "--steps", "400")
  deadline = time.time() + 600
  while not tf.train.latest_checkpoint(model_dir).endswith("-60"):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.5)
  process.send_signal(signal.SIGKILL)
  process.communicate()
  out = _finish(_main_job(model_dir, "--steps", "70"))
  resumed_at = int(out.split("resuming from ")[1].split("(step ")[1]
                   .split(")")[0])
  assert 60 <= resumed_at < 70
  # It logs every 10 steps from where it resumed: only step 70 is left.
  logged = [int(line.split()[1].split("/")[0]) for line in out.splitlines()
            if line.startswith("step ")]
  assert logged == [70]
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-70")
  assert _perplexities(out)[-1] > before + 0.5


@pytest.mark.slow
def test_main_job_fine_tunes_and_distills_from_a_checkpoint(tmp_path):
  pretrained, finetuned = str(tmp_path / "pre"), str(tmp_path / "fine")
  _finish(_main_job(pretrained, "--steps", "10"))

  distilled = str(tmp_path / "distilled")
  out = _finish(_main_job(distilled, "--steps", "10", "--distill_from",
                          pretrained))
  assert "distilling %s into its dense twin" % pretrained in out
  assert "weights from %s/model.ckpt-10" % pretrained in out
  # The student is dense: the only Switch layers reported are the teacher's.
  assert "teacher/encoder/block_000/layer_003/SwitchFeedForward" in out
  assert "\n  encoder/block_000/layer_003/SwitchFeedForward" not in out
  (after,) = _perplexities(out)
  assert -7.0 < after < 0
  finetune = ["--init_checkpoint", pretrained, "--gin_file",
              "models/switch_tiny.gin", "--gin_file", "finetune/switch.gin",
              "--task", "mtf_switch_default_docstring_summary",
              "--input_length", "64", "--target_length", "16",
              "--learning_rate", "1e-3"]
  out = _finish(_main_job(finetuned, "--steps", "10", "--metrics",
                          "--metric_batches", "1", *finetune))
  assert "weights from %s/model.ckpt-10" % pretrained in out
  assert "step 10/10  loss" in out
  metrics = out.split("validation metrics after 10 steps: ")[1]
  assert "examples 16" in metrics and "rouge1 " in metrics
  assert tf.train.latest_checkpoint(finetuned).endswith("model.ckpt-10")

  # A model of another shape is refused before anything is written.
  refused = str(tmp_path / "refused")
  process = _main_job(refused, "--steps", "10", *finetune, "--gin_param",
                      "mtf_switch.SwitchFeedForward.hidden_size = 48")
  _, err = process.communicate(timeout=900)
  assert process.returncode != 0
  assert "model.ckpt-10 does not fit this model" in err
  assert not os.path.exists(refused)
