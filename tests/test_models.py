"""Tests of the reduced weight init scale (Section 2.4, Table 3)."""
import gin
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import models


def test_scope_scales_matrices_and_leaves_vectors_alone():
  with tf.Graph().as_default():
    with models.init_scale_scope(0.1):
      matrix = tf.get_variable("m", shape=[3, 4],
                               initializer=tf.constant_initializer(2.0))
      vector = tf.get_variable("v", shape=[4],
                               initializer=tf.ones_initializer())
    outside = tf.get_variable("o", shape=[3, 4],
                              initializer=tf.constant_initializer(2.0))
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      m, v, o = sess.run([matrix, vector, outside])
  # Variance times 0.1, so values times sqrt(0.1).
  np.testing.assert_allclose(m, 2.0 * np.sqrt(0.1), rtol=1e-6)
  np.testing.assert_array_equal(v, 1.0)
  np.testing.assert_array_equal(o, 2.0)


@pytest.mark.parametrize("scale", [0.0, -0.1])
def test_non_positive_init_scale_is_refused(scale):
  with pytest.raises(ValueError, match="init_scale must be > 0"):
    with models.init_scale_scope(scale):
      pass


def _initial_weights(init_scale):
  """Initial values of the tiny Switch Bitransformer's variables."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  gin.bind_parameter("mtf_switch.ScaledInitBitransformer.init_scale", init_scale)
  model = models.make_bitransformer(32)
  assert isinstance(model, models.ScaledInitBitransformer)
  tf.reset_default_graph()
  tf.set_random_seed(0)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("batch", 2), mtf.Dimension("length", 4)]
  tokens = helpers.import_array(mesh, np.ones((2, 4), np.int32), dims)
  model.call_simple(inputs=tokens, targets=tokens, compute_loss=True)
  _, variables = helpers.run(graph, mesh, {}, variables_out=True)
  return variables


def test_bitransformer_init_scale_reaches_every_kind_of_weight():
  full = _initial_weights(1.0)
  reduced = _initial_weights(0.1)
  kinds = {"shared/embedding": 0, "SelfAttention/q": 0, "EncDecAttention/k": 0,
           "SwitchFeedForward/router": 0, "SwitchFeedForward/wi": 0,
           "DenseReluDense/wo": 0}
  for name, value in full.items():
    if value.ndim >= 2 and value.size >= 64:
      ratio = reduced[name].std() / value.std()
      # std scales by sqrt(0.1) = 0.316; independent draws, so loosely.
      assert 0.2 < ratio < 0.45, (name, ratio)
      for kind in kinds:
        kinds[kind] += kind in name
    elif value.ndim == 1:  # layer-norm scales stay at one
      np.testing.assert_array_equal(reduced[name], value)
  assert all(kinds.values()), kinds
