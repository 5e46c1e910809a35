"""benchmarks/adafactor_update.py: its variants compute mesh-tensorflow's
Adafactor update."""
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

bench = helpers.benchmark("adafactor_update")
SHAPE = [4, 128, 128]  # factored: both dims >= mtf's 128


def _mtf_adafactor(grad_value, updates):
  """The weight after `updates` steps of mtf's AdafactorOptimizer on a
  fixed gradient, from ones."""
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension(n, s) for n, s in zip(
      ("experts", "d_model", "d_ff"), SHAPE)]
  var = mtf.get_variable(mesh, "var", dims, initializer=tf.ones_initializer())
  grad = helpers.import_array(mesh, grad_value, dims)
  optimizer = mtf.optimize.AdafactorOptimizer(
      learning_rate=bench.LEARNING_RATE, decay_rate=bench.DECAY)
  update_ops = optimizer.apply_grad(grad, var.operation)
  lowering = mtf.Lowering(graph, {mesh: mtf.placement_mesh_impl
                                  .PlacementMeshImpl("", {}, [""])})
  update = tf.group([lowering.lowered_operation(op) for op in update_ops])
  value = lowering.export_to_tf_tensor(var)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for _ in range(updates):
      sess.run(update)
    return sess.run(value)


@pytest.mark.parametrize("variant", bench.VARIANTS)
def test_each_variant_is_mesh_tensorflows_update(variant):
  grad_value = (np.random.RandomState(0).randn(*SHAPE) * 1e-3).astype(
      np.float32)
  want = _mtf_adafactor(grad_value, updates=3)
  session, update, var = bench._build(variant, SHAPE, grad_value)
  with session:
    for _ in range(3):
      session.run(update)
    got = session.run(var)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.abs(got - 1.0).max() > 1e-3  # the weight moved
