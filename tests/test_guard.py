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


def _train_w(optimizer_class, xs, mesh_shape="", layout=""):
  """Trains w (2 x 4) on the loss sum(w * x), a step for each x.

  Returns:
    list, per step, of ({variable name: value} of the weight and optimizer
    slots, {summary name: value}).
  """
  with tf.Graph().as_default():
    global_step = tf.train.get_or_create_global_step()
    x = tf.placeholder(tf.float32, [2, 4])
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    w = mtf.get_variable(mesh, "w", DIMS, initializer=tf.constant_initializer(
        np.arange(8, dtype=np.float32).reshape(2, 4) / 8.0))
    loss = mtf.reduce_sum(w * mtf.import_tf_tensor(mesh, x, DIMS))
    [grad] = mtf.gradients([loss], [w])
    mtf.scalar_summary("gradient_norm", guard.global_norm([grad]))
    updates = optimizer_class(learning_rate=0.1).apply_grads(
        [grad], [w.operation])
    lowering = helpers.mesh_lib.lower(graph, mesh, mesh_shape, layout)
    # The step moves on after the updates that read it, as in step.py.
    with tf.control_dependencies(
        [lowering.lowered_operation(op) for op in updates]):
      train_op = tf.assign_add(global_step, 1).op
    summaries = {name.split("/")[-1]: value for name, value in
                 tf.get_collection(mtf.utils.SCALAR_SUMMARIES_COLLECTION_KEY)}
    masters = {v.name: v.get_master() for v in graph.all_variables}
    history = []
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(lowering.copy_masters_to_slices())
      for value in xs:
        _, scalars = sess.run([train_op, summaries], {x: value})
        sess.run(lowering.copy_slices_to_masters())
        history.append((sess.run(masters), scalars))
  return history


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
@pytest.mark.parametrize("mesh_shape,layout", [
    ("", ""), ("batch:2,experts:2", "batch:batch;experts:experts")])
def test_skip_leaves_weights_and_slots_as_they_were(bad, mesh_shape, layout):
  rng = np.random.RandomState(0)
  good = [rng.randn(2, 4).astype(np.float32) for _ in range(3)]
  poisoned = good[1].copy()
  poisoned[1, 3] = bad  # 1e30 is finite, its square is not
  history = _train_w(guard.SkipNonFiniteAdafactorOptimizer,
                     [good[0], poisoned, good[2]], mesh_shape, layout)
  plain = _train_w(mtf.optimize.AdafactorOptimizer, good[:1])
  (first, first_scalars), (second, second_scalars), (third, _) = history
  # A finite step is Adafactor's own update, on any mesh.
  assert sorted(first) == sorted(plain[0][0]) and len(first) > 1
  for name in first:
    np.testing.assert_allclose(first[name], plain[0][0][name], rtol=1e-6)
  assert first_scalars["nonfinite_step_skipped"] == 0.0
  np.testing.assert_allclose(first_scalars["gradient_norm"],
                             np.linalg.norm(good[0]), rtol=1e-6)
  # The poisoned step changes nothing, and says so.
  for name in first:
    np.testing.assert_array_equal(second[name], first[name])
  assert second_scalars["nonfinite_step_skipped"] == 1.0
  assert not np.isfinite(second_scalars["gradient_norm"])
  # Training goes on.
  assert not np.array_equal(third["w"], second["w"])
  assert all(np.all(np.isfinite(v)) for v in third.values())


def test_skipping_adafactor_takes_adafactors_gin_bindings():
  gin.clear_config()
  gin.parse_config("optimize.AdafactorOptimizer.decay_rate = 0.5")
  optimizer = guard.SkipNonFiniteAdafactorOptimizer()
  assert optimizer._decay_rate == 0.5
