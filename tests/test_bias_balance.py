"""Balance by expert bias (BiasBalancedRouter): the bias chooses, the
probabilities gate, and the bias moves after each step as numpy says."""
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import routers
from mtf_switch import routing
from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import step as step_lib
from mtf_switch.training import train

NUM_EXPERTS, RATE = 4, 0.05


@pytest.mark.parametrize("kwargs,match", [
    (dict(bias_update_rate=0), r"bias_update_rate must be a number > 0.*0"),
    (dict(bias_update_rate="fast"), r"bias_update_rate .*'fast'"),
    (dict(policy="sample"), r"policy='sample'"),
])
def test_bad_settings_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    routers.BiasBalancedRouter(**kwargs)


def _np_softmax(logits):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_the_bias_chooses_and_the_probabilities_gate():
  rng = np.random.RandomState(0)
  logits = rng.randn(2, 8, NUM_EXPERTS).astype(np.float32)
  bias = np.array([0.0, 0.5, -0.5, 0.2], np.float32)
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("batch", 2), mtf.Dimension("group", 8),
          mtf.Dimension("experts", NUM_EXPERTS)]
  got = routing.route(
      helpers.import_array(mesh, logits, dims), 2, capacity=16,
      score_bias=helpers.import_array(mesh, bias, dims[-1:]))
  values = helpers.run(graph, mesh, {
      "index_%d" % i: a.expert_index for i, a in enumerate(got.assignments)}
                       | {"gate_%d" % i: a.gate
                          for i, a in enumerate(got.assignments)})
  probs = _np_softmax(logits)
  order = np.argsort(-(probs + bias), axis=-1, kind="stable")
  chosen = [np.take_along_axis(probs, order[..., i:i + 1], -1)[..., 0]
            for i in range(2)]
  for i in range(2):
    np.testing.assert_array_equal(values["index_%d" % i], order[..., i])
    np.testing.assert_allclose(values["gate_%d" % i],
                               chosen[i] / (chosen[0] + chosen[1]),
                               rtol=1e-6)
  # The bias changed some choices: otherwise this test says nothing.
  assert (order[..., 0] != probs.argmax(-1)).any()


def _train(x, objective_weights, steps, k, mesh_shape, layout):
  """Trains a bias-balanced Switch layer by SGD; per step, the router
  kernel and the bias before it, and the bias after the last."""
  tf.reset_default_graph()
  tf.set_random_seed(0)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim, length_dim, model_dim = (
      mtf.Dimension(n, s) for n, s in zip(("batch", "length", "d_model"),
                                          x.shape))
  context = helpers.make_context(mesh, batch_dim, length_dim,
                                 layout=layout or None,
                                 mesh_shape=mesh_shape or None)
  layer = layers.SwitchFeedForward(
      router=routers.BiasBalancedRouter(
          bias_update_rate=RATE, num_selected_experts=k, policy="argmax"),
      num_experts=NUM_EXPERTS, hidden_size=helpers.D_FF,
      group_size=helpers.LENGTH, capacity_factor_train=1.0, min_capacity=1)
  with tf.variable_scope("switch"):
    y = layer.call(context, helpers.import_array(
        mesh, x, [batch_dim, length_dim, model_dim]))
  objective = mtf.reduce_sum(y * helpers.import_array(
      mesh, objective_weights, y.shape.dims))
  variables, grads = step_lib.gradients(objective)
  # Only its own rule moves the bias: no gradient, no optimizer.
  assert not [v for v in variables if "expert_bias" in v.name]
  updates = mtf.optimize.SgdOptimizer(0.5).apply_grads(grads, variables)
  lowering = mesh_lib.lower(graph, mesh, mesh_shape, layout)
  train_op = tf.group([lowering.lowered_operation(op) for op in updates])
  masters = {v.name: v.get_master() for v in graph.all_variables}
  kernel = next(n for n in masters if n.endswith("router/kernel"))
  bias = next(n for n in masters if n.endswith("router/expert_bias"))
  history = []
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    sess.run(lowering.copy_masters_to_slices())
    for _ in range(steps + 1):
      sess.run(lowering.copy_slices_to_masters())
      history.append(sess.run([masters[kernel], masters[bias]]))
      sess.run(train_op)
  return history


@pytest.mark.parametrize("k,mesh_shape,layout", [
    (1, "", ""),
    (2, "", ""),
    # The load is the whole batch's: summed over the batch's split.
    (1, "batch:2", "batch:batch"),
    (1, "batch:2,experts:2", "batch:batch;experts:experts"),
])
def test_the_bias_moves_towards_balance_as_numpy_says(k, mesh_shape, layout):
  rng = np.random.RandomState(1)
  shape = (helpers.BATCH, helpers.LENGTH, helpers.D_MODEL)
  # Inputs that favour expert 0 at first, so the bias has work to do.
  x = rng.randn(*shape).astype(np.float32) + 1.0
  history = _train(x, rng.randn(*shape).astype(np.float32), 6, k,
                   mesh_shape, layout)
  tokens = x.reshape(-1, helpers.D_MODEL)
  moved = False
  for (kernel, bias), (_, next_bias) in zip(history, history[1:]):
    scores = _np_softmax(tokens @ kernel) + bias
    top = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    load = np.bincount(top.ravel(), minlength=NUM_EXPERTS)
    want = bias + RATE * np.sign(load.mean() - load)
    np.testing.assert_allclose(next_bias, want, rtol=1e-6, atol=1e-7)
    moved |= (load != load.mean()).any()
  assert moved


def test_evaluation_leaves_the_bias_as_it_is():
  rng = np.random.RandomState(2)
  x = rng.randn(helpers.BATCH, helpers.LENGTH, helpers.D_MODEL)
  router = routers.BiasBalancedRouter(policy="argmax")
  layer = layers.SwitchFeedForward(
      router=router, num_experts=NUM_EXPERTS, hidden_size=helpers.D_FF,
      group_size=helpers.LENGTH)
  values, variables = helpers.run_layer(layer, x, train_mode=False)
  bias = next(n for n in variables if n.endswith("expert_bias"))
  assert variables[bias][0].tolist() == [0.0] * NUM_EXPERTS
  assert np.isfinite(values["y"]).all()


@pytest.mark.slow
def test_the_main_job_updates_the_bias_and_checkpoints_it(tmp_path):
  steps, rate = 6, 1e-3
  train.main(["--model_dir", str(tmp_path), "--steps", str(steps),
              "--log_every", "3", "--save_every", "3", "--gin_param",
              "mtf_switch.SwitchFeedForward.router = "
              "@mtf_switch.BiasBalancedRouter()"])
  reader = tf.train.load_checkpoint(str(tmp_path))
  biases = [reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if n.endswith("router/expert_bias")]
  assert len(biases) == 2  # the encoder's and the decoder's Switch layer
  for bias in biases:
    # Each step moved each expert by +-rate (or 0 at exactly mean load).
    units = bias / rate
    np.testing.assert_allclose(units, np.round(units), atol=1e-3)
    assert np.abs(units).max() <= steps and np.abs(units).sum() > 0
