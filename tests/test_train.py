"""The main job: its pieces, and the command end to end (kill and resume)."""
import os
import signal
import subprocess
import sys
import time

import gin
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import train


def test_summarize_metrics_prints_one_line_per_layer():
  lines = train.summarize_metrics({
      "enc/ffn/dropped_fraction": 0.25, "enc/ffn/aux_loss": 0.01,
      "enc/ffn/router_confidence": 0.5, "enc/ffn/router_entropy": 1.0,
      "enc/ffn/expert_fraction": [0.75, 0.25],
      "dec/ffn/dropped_fraction": 0.0, "dec/ffn/aux_loss": 0.02,
      "dec/ffn/router_confidence": 0.4, "dec/ffn/router_entropy": 1.1,
      "dec/ffn/expert_fraction": [0.5, 0.5]})
  assert len(lines) == 2
  assert "enc/ffn: dropped 0.250" in lines[0]
  assert "expert load [0.75 0.25]" in lines[0]


def test_training_step_writes_routing_summaries_for_tensorboard():
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  step = train.build_step_graph(train.make_model(32, "", ""), 2, 8, 8)
  sess, _ = train.start_session(step, None)
  with sess:
    tokens = np.full((2, 8), 5, np.int32)
    scalars = sess.run(step.scalars, {step.inputs: tokens,
                                      step.targets: tokens})
  tags = {v.tag: v.simple_value for v in train.scalar_summary(scalars).value}
  for layer in ("encoder/block_000/layer_003", "decoder/block_000/layer_005"):
    prefix = layer + "/SwitchFeedForward/"
    for metric in ("dropped_fraction", "aux_loss", "router_confidence",
                   "router_entropy", "expert_fraction_max",
                   "expert_fraction/000", "expert_fraction/003"):
      assert prefix + metric in tags, (prefix + metric, sorted(tags))
    np.testing.assert_allclose(
        sum(tags[prefix + "expert_fraction/%03d" % i] for i in range(4)), 1.0,
        rtol=1e-5)


def test_checkpoint_restores_the_same_weights_on_another_mesh(tmp_path):
  """Checkpoints hold master weights: a 2-device run resumes a 1-device one
  with identical evaluation."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  tokens = np.random.RandomState(0).randint(2, 32, (4, 8)).astype(np.int32)

  def step_graph(mesh_shape, layout, train_mode):
    model = train.make_model(32, mesh_shape, layout)
    return train.build_step_graph(model, 4, 8, 8, mesh_shape, layout,
                                  train=train_mode)

  def evaluate(mesh_shape, layout, model_dir):
    step = step_graph(mesh_shape, layout, False)
    sess, _ = train.start_session(step, model_dir)
    with sess:
      return sess.run(step.token_log_likelihood,
                      {step.inputs: tokens, step.targets: tokens})

  step = step_graph("", "", True)
  sess, _ = train.start_session(step, None)
  with sess:
    for _ in range(3):
      sess.run(step.train_op, {step.inputs: tokens, step.targets: tokens})
    train.save(sess, step, str(tmp_path))
  untrained = evaluate("", "", None)
  one_device = evaluate("", "", str(tmp_path))
  # Batch unsplit, so the groups (and the capacity) are those of one device.
  four_devices = evaluate("expert:2,model:2",
                          "experts:expert;d_ff:model;heads:model",
                          str(tmp_path))
  assert one_device > untrained
  np.testing.assert_allclose(four_devices, one_device, rtol=1e-5)


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
  assert "step %d/70" % (resumed_at + 1) not in out  # logs at multiples of 10
  assert "step 70/70" in out
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-70")
  assert _perplexities(out)[-1] > before + 0.5
