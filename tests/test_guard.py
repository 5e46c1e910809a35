"""mtf_switch.guard: a non-finite value fails the step, named."""
import gin
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import guard

DIMS = [mtf.Dimension("batch", 2), mtf.Dimension("experts", 4)]


def _checked_and_gradient(values, enabled, mesh_shape="", layout="",
                          squared=False):
  """checked(values) and the gradient of sum(2 x checked(values)) on a
  mesh."""
  gin.clear_config()
  gin.bind_parameter("mtf_switch.checked.enabled", enabled)
  with tf.Graph().as_default():
    tf.train.get_or_create_global_step()
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    x = helpers.import_array(mesh, values, DIMS)
    y = guard.checked(x, "router logits in encoder/block_000",
                      squared=squared)
    [grad] = mtf.gradients([mtf.reduce_sum(y * 2.0)], [x])
    return helpers.run(graph, mesh, {"y": y, "grad": grad}, mesh_shape,
                       layout)


def test_finite_values_pass_unchanged_with_their_gradient_on_a_mesh():
  values = np.arange(8, dtype=np.float32).reshape(2, 4)
  out = _checked_and_gradient(values, True, "batch:2", "batch:batch")
  np.testing.assert_array_equal(out["y"], values)
  np.testing.assert_array_equal(out["grad"], np.full_like(values, 2.0))


def test_a_nan_fails_naming_what_the_layer_and_the_step():
  values = np.zeros((2, 4), np.float32)
  values[1, 2] = np.nan
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="non-finite router logits in encoder/block_000 "
                           "at step"):
    _checked_and_gradient(values, True)


def test_squared_fails_on_values_whose_squares_overflow():
  values = np.full((2, 4), 1e20, np.float32)
  np.testing.assert_array_equal(_checked_and_gradient(values, True)["y"],
                                values)
  with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
    _checked_and_gradient(values, True, squared=True)


def test_disabled_builds_nothing():
  values = np.full((2, 4), np.inf, np.float32)
  np.testing.assert_array_equal(_checked_and_gradient(values, False)["y"],
                                values)


def test_checked_adafactor_takes_adafactors_gin_bindings():
  gin.clear_config()
  gin.parse_config("optimize.AdafactorOptimizer.decay_rate = 0.5\n"
                   "mtf_switch.CheckedAdafactorOptimizer.beta1 = 0.3")
  optimizer = guard.CheckedAdafactorOptimizer()
  assert isinstance(optimizer, mtf.optimize.AdafactorOptimizer)
  assert (optimizer._decay_rate, optimizer._beta1) == (0.5, 0.3)
