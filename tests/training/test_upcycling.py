"""Sparse upcycling: a Switch model started from a dense checkpoint, checked
against the dense checkpoint's values and the dense model's outputs."""
import os
import subprocess
import sys

import gin
import helpers  # graph mode, compat shim
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import data
from mtf_switch.training import loop
from mtf_switch.training import step as step_lib
from mtf_switch.training import upcycling

TASK = "mtf_switch_default_span_corruption"
BATCH, INPUT_LENGTH, TARGET_LENGTH = 2, 64, 16
# Top-2 with renormalized gates: two equal experts give the dense FFN's
# output whatever the router says, so the upcycled model must compute the
# dense model's logits (top-1 would scale each FFN output by its gate).
TOP_2 = ("mtf_switch.TokensChooseRouter.num_selected_experts = 2",)
# T5.1.1's FFN (gated GELU: wi_0, wi_1, wo) in the dense layers and experts.
GEGLU = ("transformer_layers.DenseReluDense.activation = ['gelu', 'linear']",
         "expert_activation = 'geglu'")


def _model(gin_file, bindings=()):
  gin.clear_config()
  cli.parse_files([gin_file], list(bindings))
  return models.make_model(data.vocab_size(TASK))


def _job(model, model_dir, **start):
  lengths = data.step_lengths(TASK, INPUT_LENGTH, TARGET_LENGTH)
  return loop.TaskTraining(model, model_dir, TASK, BATCH, *lengths, **start)


def _weights(model_dir):
  reader = tf.train.load_checkpoint(model_dir)
  return {n: reader.get_tensor(n)
          for n in reader.get_variable_to_shape_map()}


def _dense_checkpoint(model_dir, bindings=()):
  """A dense_tiny checkpoint (fresh weights) with the task's vocabulary."""
  job = _job(_model("models/dense_tiny.gin", bindings), model_dir)
  with job.sess as sess:
    os.makedirs(model_dir, exist_ok=True)
    data.write_vocabulary_record(model_dir, TASK)
    checkpoints.save(sess, job.step_graph, model_dir)
  return model_dir


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
  return _dense_checkpoint(str(tmp_path_factory.mktemp("dense")))


def _upcycled(dense_dir, model_dir, bindings=()):
  """A switch_tiny run started from dense_dir, saved before any step."""
  job = _job(_model("models/switch_tiny.gin", bindings), model_dir,
             upcycle_from=dense_dir)
  with job.sess as sess:
    said = job.start_from(sess)
    checkpoints.save(sess, job.step_graph, model_dir)
  return said


def test_each_expert_starts_as_its_dense_ffn(dense_dir, tmp_path):
  said = _upcycled(dense_dir, str(tmp_path))
  assert "upcycled from %s" % dense_dir in said
  dense, switch = _weights(dense_dir), _weights(str(tmp_path))
  # The Switch stack's (dense FFN, Switch FFN) blocks take the dense
  # stack's blocks two at a time.
  pairs = {"encoder/block_000/layer_003/SwitchFeedForward":
               "encoder/block_001/layer_001/DenseReluDense",
           "decoder/block_000/layer_005/SwitchFeedForward":
               "decoder/block_001/layer_002/DenseReluDense"}
  for switch_ffn, dense_ffn in pairs.items():
    for kernel in ("wi", "wo"):
      experts = switch["%s/%s/kernel" % (switch_ffn, kernel)]
      assert experts.shape[0] == 4
      for expert in experts:
        np.testing.assert_array_equal(
            expert, dense["%s/%s/kernel" % (dense_ffn, kernel)])
    # The router is new: fresh random weights, not in the dense model.
    assert switch[switch_ffn + "/router/kernel"].std() > 0
  for name, source in [
      ("shared/embedding",) * 2, ("encoder/rms_norm/scale",) * 2,
      ("encoder/block_000/layer_002/SelfAttention/q",
       "encoder/block_001/layer_000/SelfAttention/q"),
      ("decoder/block_000/layer_004/EncDecAttention/k",
       "decoder/block_001/layer_001/EncDecAttention/k"),
      ("decoder/block_000/layer_002/DenseReluDense/wi/kernel",) * 2]:
    np.testing.assert_array_equal(switch[name], dense[source], err_msg=name)
  # Optimizer and step start afresh.
  assert switch["global_step"] == 0
  assert not any(switch[n].any() for n in switch if "_slot_" in n)


@pytest.mark.parametrize("activation", [(), GEGLU], ids=["relu", "geglu"])
def test_with_equal_experts_the_first_output_is_the_dense_models(
    dense_dir, tmp_path, activation):
  if activation:
    dense_dir = _dense_checkpoint(str(tmp_path / "dense"), activation)
  switch_dir = str(tmp_path / "switch")
  _upcycled(dense_dir, switch_dir, TOP_2 + activation)
  rng = np.random.RandomState(0)
  vocab = data.vocab_size(TASK)
  inputs = rng.randint(1, vocab, (BATCH, INPUT_LENGTH)).astype(np.int32)
  targets = rng.randint(1, vocab, (BATCH, TARGET_LENGTH)).astype(np.int32)
  want = helpers.mtf_logits(_model("models/dense_tiny.gin", activation),
                            dense_dir, inputs, targets)
  got = helpers.mtf_logits(
      _model("models/switch_tiny.gin", TOP_2 + activation), switch_dir,
      inputs, targets)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert np.abs(want).max() > 1e-3
  if activation:  # T5.1.1's names: both input kernels came over
    switch = _weights(switch_dir)
    assert {"wi_0", "wi_1", "wo"} <= {
        n.split("/")[-2] for n in switch if "SwitchFeedForward" in n}


@pytest.mark.parametrize("bindings,named", [
    # Twice the sublayers: nothing to pair the second block with.
    (["num_layer_pairs = 2"], r"decoder stack has 6 sublayers, this "
     r"model's 12"),
    (["mtf_switch.SwitchFeedForward.hidden_size = 48"],
     r"decoder/block_001/layer_002/DenseReluDense/wi/kernel is \[64, 128\] "
     r"there; decoder/block_000/layer_005/SwitchFeedForward/wi/kernel "
     r"\(\[4, 64, 48\]\) needs \[64, 48\]"),
    (["expert_activation = 'geglu'"], r"has no decoder/block_001/layer_002/"
     r"DenseReluDense/wi_0/kernel"),
])
def test_a_model_that_does_not_fit_is_refused_by_name(dense_dir, tmp_path,
                                                      bindings, named):
  with pytest.raises(ValueError, match=named):
    _job(_model("models/switch_tiny.gin", bindings), str(tmp_path),
         upcycle_from=dense_dir)
  assert not list(tmp_path.iterdir())  # nothing written


def test_a_sublayer_of_another_kind_is_refused_by_name(dense_dir):
  # The dense encoder's order, attention first, turned around.
  weights = {"encoder/block_000/layer_%03d/%s" % (i, kind): shape
             for i, (kind, shape) in enumerate([
                 ("SwitchFeedForward/wo/kernel", [4, 128, 64]),
                 ("SelfAttention/q", [64, 64])] * 2)}
  with pytest.raises(ValueError, match=(
      r"encoder/block_000/layer_000 \(SwitchFeedForward\) would start from "
      r"encoder/block_000/layer_000, a SelfAttention")):
    upcycling.plan(weights, checkpoints.resolve(dense_dir))


def test_the_written_checkpoint_holds_the_upcycled_weights(dense_dir,
                                                           tmp_path):
  model = _model("models/switch_tiny.gin")
  graph = step_lib.build_step_graph(model, BATCH, INPUT_LENGTH,
                                    TARGET_LENGTH, train=False)
  weights = {w.op.name: w.shape.as_list() for w in graph.weights}
  checkpoint = checkpoints.resolve(dense_dir)
  copies = upcycling.plan(weights, checkpoint)
  path = upcycling.write_checkpoint(checkpoint, copies, str(tmp_path))
  assert path.endswith("model.ckpt-0")
  written, dense = _weights(str(tmp_path)), _weights(dense_dir)
  # Every weight but the routers, in the Switch model's shapes.
  assert sorted(written) == sorted(
      n for n in weights if "/router/" not in n)
  assert {n: list(v.shape) for n, v in written.items()} == {
      n: weights[n] for n in written}
  wi = "encoder/block_000/layer_003/SwitchFeedForward/wi/kernel"
  np.testing.assert_array_equal(
      written[wi][3], dense["encoder/block_001/layer_001/DenseReluDense/"
                            "wi/kernel"])


def _main_job(*args):
  return subprocess.run(
      [sys.executable, "-m", "mtf_switch.training.train"] + list(args),
      capture_output=True, text=True, timeout=900,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.mark.slow
def test_the_main_job_upcycles_and_trains(dense_dir, tmp_path):
  done = _main_job("--model_dir", str(tmp_path), "--steps", "4",
                   "--log_every", "2", "--save_every", "4", "--upcycle_from",
                   dense_dir)
  assert done.returncode == 0, done.stderr[-3000:]
  assert ("weights upcycled from %s" % checkpoints.resolve(dense_dir)
          in done.stdout)
  assert "step 4/4  loss" in done.stdout
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-4")
  refused = _main_job("--model_dir", str(tmp_path / "other"),
                      "--upcycle_from", dense_dir, "--init_checkpoint",
                      dense_dir)
  assert refused.returncode == 2
  assert "not --init_checkpoint and --upcycle_from" in refused.stderr


def test_shared_experts_start_as_the_dense_ffn(dense_dir, tmp_path):
  _upcycled(dense_dir, str(tmp_path),
            ["mtf_switch.SwitchFeedForward.num_shared_experts = 1"])
  dense, switch = _weights(dense_dir), _weights(str(tmp_path))
  for kernel in ("wi", "wo"):
    np.testing.assert_array_equal(
        switch["encoder/block_000/layer_003/SwitchFeedForward/shared/%s/"
               "kernel" % kernel],
        dense["encoder/block_001/layer_001/DenseReluDense/%s/kernel"
              % kernel])
