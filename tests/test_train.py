"""End-to-end tests of the main job and of the installed package."""
import os
import subprocess
import sys

import gin
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
  step = train.build_train_graph(train.make_model(32, "", ""), 2, 8)
  with tf.Session(graph=step.graph) as sess:
    for op in step.init_ops:
      sess.run(op)
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


def _run(args, cwd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable] + args, cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_main_job_prints_progress_loss_and_routing_metrics(tmp_path):
  result = _run(["-m", "mtf_switch.train", "--steps", "20", "--log_every",
                 "10", "--mesh_shape", "batch:2,experts:2", "--layout",
                 "batch:batch;experts:experts", "--model_dir",
                 str(tmp_path / "run")], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "step 10  loss" in out and "step 20  loss" in out
  assert "tokens/s" in out
  assert out.count("SwitchFeedForward: dropped") == 4  # 2 layers x 2 logs
  first, last = out.split("loss: first step ")[1].split(", last step ")
  assert float(last) < float(first)
  events, = (tmp_path / "run").glob("events.out.tfevents.*")
  tags = {v.tag for e in tf.train.summary_iterator(str(events))
          for v in e.summary.value}
  assert "loss" in tags
  assert any(t.endswith("SwitchFeedForward/dropped_fraction") for t in tags)


@pytest.mark.slow
def test_fresh_interpreter_imports_mtf_and_finds_gin_files_by_name(tmp_path):
  code = ("import mtf_switch, gin, mesh_tensorflow.transformer;"
          "gin.parse_config_file('models/switch_tiny.gin');"
          "print(gin.query_parameter('mtf_switch.SwitchFeedForward.group_size'))")
  result = _run(["-c", code], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == "64"
