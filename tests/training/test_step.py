"""The lowered training and evaluation step."""
import gin
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import distillation
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import reporting
from mtf_switch.training import step as step_lib


def test_training_step_writes_routing_summaries_for_tensorboard():
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(models.make_bitransformer(32), 2, 8, 8)
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    tokens = np.full((2, 8), 5, np.int32)
    scalars = sess.run(step.scalars, {step.inputs: tokens,
                                      step.targets: tokens})
  tags = {v.tag: v.simple_value for v in reporting.scalar_summary(scalars).value}
  for layer in ("encoder/block_000/layer_003", "decoder/block_000/layer_005"):
    prefix = layer + "/SwitchFeedForward/"
    for metric in ("dropped_fraction", "aux_loss", "router_confidence",
                   "router_entropy", "expert_fraction_max",
                   "expert_fraction/000", "expert_fraction/003"):
      assert prefix + metric in tags, (prefix + metric, sorted(tags))
    np.testing.assert_allclose(
        sum(tags[prefix + "expert_fraction/%03d" % i] for i in range(4)), 1.0,
        rtol=1e-5)


@pytest.mark.parametrize("feed,named", [
    ("inputs", "inputs: token ids must be in \\[0, 32\\) .*got\\] \\[32\\]"),
    ("targets", "targets: token ids must be in \\[0, 32\\) .*got\\] \\[-1\\]"),
])
def test_token_ids_outside_the_vocabulary_fail_the_step_named(feed, named):
  # The embedding's rows are padded to a multiple of 128: id 32 would read
  # a padding row and train on without a word.
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(models.make_bitransformer(32), 2, 8, 8)
  tokens = np.full((2, 8), 5, np.int32)
  bad = tokens.copy()
  bad[1, 3] = 32 if feed == "inputs" else -1
  feeds = {step.inputs: tokens, step.targets: tokens}
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    sess.run(step.train_op, feeds)  # in range: fine
    feeds[getattr(step, feed)] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match=named):
      sess.run(step.train_op, feeds)


@pytest.mark.parametrize("sizes,named", [
    ((0, 8, 8), "batch_size=0"), ((2, 0, 8), "input_length=0"),
    ((2, 8, -1), "target_length=-1"), ((2, 8.0, 8), "input_length=8.0")])
def test_an_empty_batch_or_sequence_is_refused_before_building(sizes, named):
  with pytest.raises(ValueError, match=named + ": give a positive int"):
    step_lib.build_step_graph(None, *sizes)


def test_vocabulary_sizes_of_each_kind_of_model():
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  encoder_decoder = models.make_bitransformer(32)
  assert step_lib.vocab_sizes(encoder_decoder) == (32, 32)
  assert step_lib.vocab_sizes(
      distillation.Distillation(encoder_decoder)) == (32, 32)
  assert step_lib.vocab_sizes(helpers.tiny_switch_lm(vocab_size=24)) == (
      24, 24)


def _float_dtypes(graph):
  return {t.dtype for op in graph.get_operations() for t in op.outputs
          if t.dtype.is_floating}


def test_gin_sets_the_activation_dtype_of_step_graphs():
  """`mtf_switch.activation_dtype.dtype` (the main job's and the studies'
  precision): bfloat16 activations in the step graph, float32 weights."""
  model = helpers.tiny_switch_lm()
  step = step_lib.build_step_graph(model, 2, 8, 8)
  assert tf.bfloat16 not in _float_dtypes(step.graph)
  model = helpers.tiny_switch_lm(
      bindings=["mtf_switch.activation_dtype.dtype = 'bfloat16'"])
  step = step_lib.build_step_graph(model, 2, 8, 8)
  assert tf.bfloat16 in _float_dtypes(step.graph)
  assert {v.dtype.base_dtype for v in step.weights} == {tf.float32}
  # A dtype given by the caller wins over gin.
  step = step_lib.build_step_graph(model, 2, 8, 8,
                                   activation_dtype=tf.float32)
  assert tf.bfloat16 not in _float_dtypes(step.graph)


def test_activation_dtype_refuses_other_dtypes():
  model = helpers.tiny_switch_lm(
      bindings=["mtf_switch.activation_dtype.dtype = 'float16'"])
  with pytest.raises(ValueError, match=r"float32, bfloat16, got 'float16'"):
    step_lib.build_step_graph(model, 2, 8, 8)
