"""Dropless dispatch: nothing dropped, whatever the router does; equal to
einsum dispatch with room for every token, and to numpy, on every mesh."""
import helpers
import mesh_tensorflow as mtf
import numpy as np
import numpy_reference
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import step as step_lib

BATCH, LENGTH, D_MODEL = helpers.BATCH, helpers.LENGTH, helpers.D_MODEL
D_FF = 6  # splits over a 2-core model axis

# (mesh shape, layout): every way the layer's mesh tests split it, and the
# two code paths of splitting the batch (kernels copied per batch shard, or
# tokens gathered when the experts or d_ff share the batch's axis).
MESHES = [
    ("", ""),
    ("batch:2", "batch:batch"),
    ("batch:2", "batch:batch;experts:batch"),  # T5's default
    ("batch:2,expert:2", "batch:batch;experts:expert"),
    ("expert:2,model:2", "experts:expert;d_ff:model"),
    ("batch:2,expert:2,model:2", "batch:batch;experts:expert;d_ff:model"),
    ("batch:2,model:2", "batch:batch;experts:batch;d_ff:model"),
]


def _inputs(seed):
  """x [batch, length, d_model] whose first five tokens of each sequence
  all lean one way (so one expert is overloaded), and sequence ids with
  padding."""
  rng = np.random.RandomState(seed)
  x = rng.randn(BATCH, LENGTH, D_MODEL)
  x[:, :5] += 3.0 * rng.randn(D_MODEL)
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[1, 6:] = 0
  return x, sequence_id


def _layer(k, mode="dropless", **kwargs):
  return helpers.switch_layer(
      num_selected_experts=k, activation="geglu" if k == 2 else "relu",
      hidden_size=D_FF, dispatch_mode=mode, z_loss_coef=1e-3, **kwargs)


def _reference(x, sequence_id, variables, k, capacity=LENGTH):
  return numpy_reference.switch_layer(
      x, k=k, capacity=capacity, group_size=LENGTH,
      nonpadding=(sequence_id > 0).astype(float), z_loss_coef=1e-3,
      **helpers.weights_by_role(variables, 4))


@pytest.mark.parametrize("mesh_shape,layout", MESHES)
@pytest.mark.parametrize("k", [1, 2])
def test_dropless_matches_numpy_on_every_mesh(mesh_shape, layout, k):
  x, sequence_id = _inputs(k)
  got, variables = helpers.run_layer(_layer(k), x, sequence_id,
                                     mesh_shape=mesh_shape, layout=layout)
  want_y, want = _reference(x, sequence_id, variables, k)
  np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["loss_0"], want["aux_loss"], rtol=1e-5)
  np.testing.assert_allclose(got["loss_1"], want["z_loss"], rtol=1e-5)
  assert got["switch/dropped_fraction"] == 0.0
  assert want["dropped_fraction"] == 0.0
  # Capacity factor 1 would drop tokens of these groups, and change the
  # output; padding gets nothing.
  capped_y, capped = _reference(x, sequence_id, variables, k, capacity=2)
  assert capped["dropped_fraction"] > 0.1
  assert np.abs(got["y"] - capped_y).max() > 0.1
  assert np.all(got["y"][sequence_id == 0] == 0)


@pytest.mark.parametrize("mesh_shape,layout", MESHES)
@pytest.mark.parametrize("k", [1, 2])
def test_loss_and_gradients_equal_einsum_with_room_for_every_token(
    mesh_shape, layout, k):
  """Gradients with respect to the input, the router and the experts; at
  capacity factor = num_experts, einsum dispatch drops nothing either."""
  x, sequence_id = _inputs(10 + k)
  objective_weights = np.random.RandomState(k).randn(*x.shape)

  def run(mode, weights=None):
    return helpers.run_layer(
        _layer(k, mode, capacity_factor_train=4.0), x, sequence_id,
        mesh_shape=mesh_shape, layout=layout,
        objective_weights=objective_weights, variable_values=weights)

  einsum, variables = run("einsum")
  dropless, _ = run("dropless", {n: v for n, (v, _) in variables.items()})
  assert einsum["switch/dropped_fraction"] == 0.0
  grads = [n for n in einsum if n.startswith("grad")]
  assert len(grads) == (5 if k == 2 else 4)  # router, wi(s), wo, x
  for name in grads + ["y", "objective", "loss_0", "loss_1"]:
    np.testing.assert_allclose(dropless[name], einsum[name], rtol=1e-4,
                               atol=1e-6, err_msg=name)
    assert np.abs(einsum[name]).max() > 1e-4, name


@pytest.mark.parametrize("mesh_shape,layout", [MESHES[0], MESHES[5]])
@pytest.mark.parametrize("k", [1, 2])
def test_gradients_match_numpy_finite_differences(mesh_shape, layout, k):
  """d(sum(y * w) + aux loss + z-loss) with respect to x, the router and
  every expert kernel, against central differences of the float64 numpy
  reference."""
  x, sequence_id = _inputs(20 + k)
  objective_weights = np.random.RandomState(k).randn(*x.shape)
  got, variables = helpers.run_layer(
      _layer(k), x, sequence_id, mesh_shape=mesh_shape, layout=layout,
      objective_weights=objective_weights)
  weights = helpers.weights_by_role(variables, 4)
  got_grads = helpers.weights_by_role(
      {n: (got["grad/" + n], dims) for n, (_, dims) in variables.items()}, 4)
  got_grads["x"] = got["grad_input"]

  def objective(**changed):
    args = dict(weights, x=x)
    args.update(changed)
    y, routed = numpy_reference.switch_layer(
        k=k, capacity=LENGTH, group_size=LENGTH,
        nonpadding=(sequence_id > 0).astype(float), z_loss_coef=1e-3,
        **args)
    return (y * objective_weights).sum() + routed["aux_loss"] + routed[
        "z_loss"]

  assert set(got_grads) == set(weights) | {"x"}
  for role, got_grad in got_grads.items():
    value = x if role == "x" else weights[role]
    want = helpers.numeric_gradient(lambda v: objective(**{role: v}), value)
    assert np.abs(want).max() > 1e-3, role
    np.testing.assert_allclose(got_grad, want, rtol=1e-3, atol=1e-4,
                               err_msg=role)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape,layout", [
    ("batch:2", "batch:batch;experts:batch"),
    ("batch:2,expert:2,model:2",
     "batch:batch;experts:expert;d_ff:model;heads:model"),
])
def test_language_model_loss_and_gradients_equal_einsum(mesh_shape, layout):
  """In a model (its layout read from the Unitransformer), top-2."""
  tokens = helpers.random_tokens(np.random.RandomState(1), 4, 8, 16,
                                 num_padding=1)
  bindings = ["mtf_switch.TokensChooseRouter.num_selected_experts = 2",
              "mtf_switch.SwitchFeedForward.capacity_factor_train = 4.0"]
  einsum, variables = helpers.lm_loss_and_grads(
      mesh_shape, layout, tokens, bindings=bindings)
  dropless, _ = helpers.lm_loss_and_grads(
      mesh_shape, layout, tokens, variables, bindings=bindings + [
          "mtf_switch.SwitchFeedForward.dispatch_mode = 'dropless'"])
  helpers.assert_same_loss_and_gradients(dropless, einsum,
                                         "SwitchFeedForward")
  # The embedding's gradient passes through the layer's input gradient.
  assert np.abs(einsum["grad/transformer/embedding"]).max() > 1e-3


@pytest.mark.parametrize("train_mode", [True, False])
def test_every_token_served_when_all_choose_one_expert(train_mode):
  """Every token points the same way, so all choose one expert: capacity
  would drop most of them; dropless serves all, in training and
  evaluation, and its dropped-fraction metric reads 0."""
  rng = np.random.RandomState(3)
  x = (rng.uniform(0.5, 2.0, (BATCH, LENGTH, 1)) * rng.randn(D_MODEL)
       + 1e-3 * rng.randn(BATCH, LENGTH, D_MODEL))
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[1, 6:] = 0
  got, variables = helpers.run_layer(_layer(1), x, sequence_id,
                                     train_mode=train_mode)
  assert got["switch/expert_fraction_max"] == pytest.approx(1.0)
  assert got["switch/dropped_fraction"] == 0.0
  want_y, want = _reference(x, sequence_id, variables, 1)
  np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(want["kept"].reshape(BATCH, LENGTH),
                                sequence_id)
  capped, _ = helpers.run_layer(
      _layer(1, "einsum", capacity_factor_eval=1.0), x, sequence_id,
      train_mode=train_mode,
      variable_values={n: v for n, (v, _) in variables.items()})
  assert capped["switch/dropped_fraction"] > 0.5


def _graph_of(layer, mesh_shape="", layout=""):
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim = mtf.Dimension("batch", BATCH)
  length_dim = mtf.Dimension("length", LENGTH)
  x = mtf.random_uniform(mesh, [batch_dim, length_dim,
                                mtf.Dimension("d_model", 4)])
  y = layer.call(helpers.make_context(mesh, batch_dim, length_dim,
                                      layout=layout or None,
                                      mesh_shape=mesh_shape or None), x)
  return graph, y


@pytest.mark.parametrize("mode,buffers", [("dropless", False),
                                          ("einsum", True), ("index", True)])
def test_dropless_builds_no_capacity_buffers(mode, buffers):
  graph, _ = _graph_of(_layer(2, mode))
  dims = {d.name for op in graph.operations for t in op.outputs
          for d in t.shape.dims}
  assert ("capacity" in dims) == buffers
  assert ("experts_unsplit" in dims)  # the router still sees every expert


def test_the_kernels_gradient_is_not_one_kernel_per_expert():
  """Each expert's kernels enter its matmuls as one piece of an unstacked
  kernel: a slice kernel[e] per expert would make its gradient a tensor of
  the whole kernel per expert (128 x 128 MB at Switch-Base's d_model and
  d_ff over 128 experts)."""
  graph, y = _graph_of(_layer(1, num_experts=32))
  variables, grads = step_lib.gradients(mtf.reduce_sum(mtf.square(y)))
  wi, = [v for v in variables if v.name.endswith("wi/kernel")]
  lowering = mesh_lib.lower(graph, y.mesh)
  for g in grads:
    lowering.export_to_tf_tensor(g)
  # Every [experts, d_model, d_ff] tensor of the step (and wo's).
  kernel_sized = [t for op in tf.get_default_graph().get_operations()
                  for t in op.outputs
                  if t.shape.is_fully_defined()
                  and t.shape.num_elements() == wi.shape.size]
  # A few each (the variable, its reads and casts, the gradient's stack);
  # a slice per expert would add two per expert.
  assert 0 < len(kernel_sized) < 32


def test_a_layout_that_splits_d_model_is_refused():
  with pytest.raises(ValueError, match=r"dropless.*'d_model' rows.*'model'"):
    _graph_of(_layer(1), "model:2", "d_model:model")


def test_expert_dropout_applies_in_training_only():
  x, sequence_id = _inputs(5)

  def y(rate, train_mode, weights=None):
    got, variables = helpers.run_layer(
        _layer(1, expert_dropout_rate=rate), x, sequence_id,
        train_mode=train_mode, variable_values=weights)
    return got["y"], {n: v for n, (v, _) in variables.items()}

  plain, weights = y(0.0, True)
  dropped, _ = y(0.5, True, weights)
  assert not np.allclose(dropped, plain)
  # Dropout zeroes hidden units, it does not move tokens: padding stays 0.
  assert np.all(dropped[sequence_id == 0] == 0)
  np.testing.assert_array_equal(y(0.5, False, weights)[0],
                                y(0.0, False, weights)[0])
