"""Tests of the SwitchFeedForward layer: numerics, meshes, dtypes, errors."""
import gin
import helpers
import mesh_tensorflow as mtf
import numpy as np
import numpy_reference
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import models
from mtf_switch import routers
from mtf_switch.training import checkpoints
from mtf_switch.training import step as step_lib

BATCH, LENGTH, D_MODEL = helpers.BATCH, helpers.LENGTH, helpers.D_MODEL
_layer = helpers.switch_layer
_run_layer = helpers.run_layer


@pytest.mark.parametrize("k,activation,capacity_factor", [
    (1, "relu", 0.5), (1, "relu", 2.0), (1, "geglu", 1.0),
    (2, "relu", 0.5), (2, "geglu", 2.0)])
def test_layer_matches_numpy_reference(k, activation, capacity_factor):
  rng = np.random.RandomState(7)
  x = rng.randn(BATCH, LENGTH, D_MODEL)
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[1, 5:] = 0  # padding
  layer = _layer(num_selected_experts=k, activation=activation,
                 capacity_factor_train=capacity_factor)
  got, variables = _run_layer(layer, x, sequence_id)
  capacity = max(int(np.ceil(LENGTH * capacity_factor / 4)), 1)
  want_y, want = numpy_reference.switch_layer(
      x, k=k, capacity=capacity, group_size=LENGTH,
      nonpadding=(sequence_id > 0).astype(float),
      **helpers.weights_by_role(variables, 4))
  np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)
  prefix = "switch/"
  np.testing.assert_allclose(got["loss_0"], want["aux_loss"], rtol=1e-5)
  np.testing.assert_allclose(got[prefix + "dropped_fraction"],
                             want["dropped_fraction"], atol=1e-6)
  # Dropped tokens and padding get exactly zero output (the residual
  # carries them, Section 2.2).
  unrouted = (want["kept"] == 0).reshape(BATCH, LENGTH)
  if capacity_factor < 1:
    assert unrouted.sum() > (sequence_id == 0).sum()
  assert np.all(got["y"][unrouted] == 0)


@pytest.mark.parametrize("dispatch_mode", ["einsum", "index", "dropless"])
@pytest.mark.parametrize("k,num_shared", [(3, 0), (4, 0), (3, 1), (1, 2)])
def test_fine_grained_and_shared_experts_match_numpy(dispatch_mode, k,
                                                     num_shared):
  """Top-k beyond 2 (fine-grained experts) and shared experts
  (DeepSeekMoE): the routed experts as the numpy reference, plus the
  shared experts' FFN on every token, padding included."""
  rng = np.random.RandomState(11)
  x = rng.randn(BATCH, LENGTH, D_MODEL)
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[0, 6:] = 0
  capacity_factor = 1.0 * k  # room for about every choice, some drops
  layer = _layer(num_selected_experts=k, capacity_factor_train=capacity_factor,
                 num_shared_experts=num_shared, dispatch_mode=dispatch_mode)
  got, variables = _run_layer(layer, x, sequence_id)
  capacity = (LENGTH if dispatch_mode == "dropless" else
              max(int(np.ceil(LENGTH * capacity_factor / 4)), 1))
  want_y, _ = numpy_reference.switch_layer(
      x, k=k, capacity=capacity, group_size=LENGTH,
      nonpadding=(sequence_id > 0).astype(float),
      **helpers.weights_by_role(variables, 4))
  if num_shared:
    want_y += helpers.shared_ffn(x, variables)
    assert variables[next(n for n in variables if "/shared/wi" in n)][
        0].shape == (D_MODEL, num_shared * helpers.D_FF)
  else:
    assert not [n for n in variables if "/shared/" in n]
  np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)


def test_a_bad_number_of_shared_experts_is_refused():
  with pytest.raises(ValueError, match=r"num_shared_experts must be an int "
                     r">= 0 \(0: none\), got -1"):
    _layer(num_shared_experts=-1)


def _numpy_router_gradient(x, weights, objective_weights, eps=1e-6,
                           **layer_args):
  """d(sum(y * objective_weights) + aux loss) / d(router kernel) by central
  differences of the float64 numpy reference."""
  def objective(router_w):
    y, routed = numpy_reference.switch_layer(x, router_w=router_w,
                                             **dict(weights, **layer_args))
    return (y * objective_weights).sum() + routed["aux_loss"]
  router_w = weights.pop("router_w").astype(np.float64)
  grad = np.zeros_like(router_w)
  for index in np.ndindex(*router_w.shape):
    step = np.zeros_like(router_w)
    step[index] = eps
    grad[index] = (objective(router_w + step) -
                   objective(router_w - step)) / (2 * eps)
  return grad


@pytest.mark.parametrize("k,aux_loss_coef", [
    (1, 0.0), (1, 1e-2), (2, 0.0), (2, 1e-2)])
def test_router_gradient_matches_finite_differences(k, aux_loss_coef):
  """The gate's gradient (Section 2.1: the router learns through the gate
  value that scales the expert's output) and the aux loss's, against
  numpy, with drops (capacity factor 0.5) and padding."""
  rng = np.random.RandomState(3)
  x = rng.randn(BATCH, LENGTH, D_MODEL)
  objective_weights = rng.randn(BATCH, LENGTH, D_MODEL)
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[2, 6:] = 0
  layer = _layer(num_selected_experts=k, aux_loss_coef=aux_loss_coef,
                 capacity_factor_train=0.5)
  got, variables = _run_layer(layer, x, sequence_id,
                              objective_weights=objective_weights)
  (grad_name,) = [n for n in got if n.endswith("router/kernel")
                  and n.startswith("grad/")]
  dims = variables[grad_name[len("grad/"):]][1]
  got_grad = np.transpose(got[grad_name],
                          [dims.index("d_model"),
                           dims.index("experts_unsplit")])
  want_grad = _numpy_router_gradient(
      x, helpers.weights_by_role(variables, 4), objective_weights, k=k,
      capacity=max(int(np.ceil(LENGTH * 0.5 / 4)), 1), group_size=LENGTH,
      nonpadding=(sequence_id > 0).astype(float),
      aux_loss_coef=aux_loss_coef)
  assert got["switch/dropped_fraction"] > 0
  assert np.abs(want_grad).max() > 1e-3
  np.testing.assert_allclose(got_grad, want_grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("requested,chosen", [
    (2 * LENGTH, 2 * LENGTH),  # each group spans two sequences
    (5, 4)])  # 5 does not divide the 32 tokens: falls back to 4
def test_group_fallback_and_groups_spanning_sequences_match_numpy(
    requested, chosen):
  rng = np.random.RandomState(11)
  x = rng.randn(BATCH, LENGTH, D_MODEL)
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[1, 3:] = 0
  assert layers.choose_group_size(BATCH * LENGTH, requested, 1) == chosen
  layer = _layer(group_size=requested, capacity_factor_train=0.5)
  got, variables = _run_layer(layer, x, sequence_id)
  capacity = int(np.ceil(chosen * 0.5 / 4))
  want_y, want = numpy_reference.switch_layer(
      x, k=1, capacity=capacity, group_size=chosen,
      nonpadding=(sequence_id > 0).astype(float),
      **helpers.weights_by_role(variables, 4))
  np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["switch/dropped_fraction"],
                             want["dropped_fraction"], atol=1e-6)
  assert want["dropped_fraction"] > 0


def test_shipped_defaults_jitter_min_capacity_and_expert_dropout():
  """The zoo's settings (switch_defaults.gin: input jitter, min_capacity 4)
  with expert dropout 0.4 (Section 4.1's fine-tuning rate)."""
  rng = np.random.RandomState(9)
  x = rng.randn(BATCH, LENGTH, D_MODEL)
  sequence_id = np.ones((BATCH, LENGTH), np.int32)

  def run(train, seed, dropout=0.4, weights=None):
    layer = _layer(policy="input_jitter", min_capacity=4,
                   expert_dropout_rate=dropout, capacity_factor_eval=0.5)
    got, variables = _run_layer(layer, x, sequence_id, train_mode=train,
                                seed=seed, variable_values=weights)
    return got["y"], variables

  eval_y, variables = run(False, seed=0)
  weights = {n: v for n, (v, _) in variables.items()}
  numpy_weights = helpers.weights_by_role(variables, 4)
  # Evaluation: argmax routing, no noise, no dropout; min_capacity lifts
  # the eval capacity from ceil(8 * 0.5 / 4) = 1 to 4 slots.
  want_y, want = numpy_reference.switch_layer(
      x, k=1, capacity=4, group_size=LENGTH, **numpy_weights)
  np.testing.assert_allclose(eval_y, want_y, rtol=1e-4, atol=1e-5)
  _, one_slot = numpy_reference.switch_layer(
      x, k=1, capacity=1, group_size=LENGTH, **numpy_weights)
  assert one_slot["dropped_fraction"] > want["dropped_fraction"]
  np.testing.assert_array_equal(run(False, seed=1, weights=weights)[0],
                                eval_y)
  np.testing.assert_array_equal(
      run(False, seed=1, dropout=0.0, weights=weights)[0], eval_y)

  # Training: the noise depends on the seed.
  train_y = run(True, seed=0, dropout=0.0, weights=weights)[0]
  assert not np.array_equal(
      run(True, seed=1, dropout=0.0, weights=weights)[0], train_y)
  # Jitter touches only the router's input: each token's output is still
  # one expert's output on the unperturbed token, scaled by its gate.
  tokens = x.reshape(-1, D_MODEL)
  experts = np.stack([
      numpy_reference.relu(tokens @ numpy_weights["wi"][e])
      @ numpy_weights["wo"][e] for e in range(4)])  # [experts, tokens, d]
  routed = 0
  for t, y in enumerate(train_y.reshape(-1, D_MODEL)):
    if np.abs(y).max() == 0:
      continue  # dropped
    cosines = experts[:, t] @ y / (np.linalg.norm(experts[:, t], axis=-1)
                                   * np.linalg.norm(y) + 1e-30)
    assert cosines.max() > 1 - 1e-5
    routed += 1
  assert routed > BATCH * LENGTH // 2
  # Expert dropout: only in training.
  dropped_y = run(True, seed=0, weights=weights)[0]
  assert not np.array_equal(dropped_y, train_y)


def _routing_of_model(model, targets, inputs=None, sequence_id=None,
                      weights=None):
  """Routing metrics of a Bitransformer (with inputs) or a decoder-only
  model (without) on int32 numpy tokens; 0 is padding."""
  tf.reset_default_graph()
  tf.set_random_seed(0)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim = mtf.Dimension("batch", targets.shape[0])

  def tokens(array):
    return helpers.import_array(
        mesh, array, [batch_dim, mtf.Dimension("length", array.shape[1])])

  mtf_targets = tokens(targets)
  kwargs = dict(targets=mtf_targets, compute_loss=True,
                mode=tf.estimator.ModeKeys.TRAIN)
  if inputs is not None:
    kwargs["inputs"] = tokens(inputs)
  else:
    kwargs["inputs"] = mtf.shift(mtf_targets, offset=1,
                                 dim=mtf_targets.shape.dims[1], wrap=False)
    if sequence_id is not None:
      kwargs["sequence_id"] = tokens(sequence_id)
  model.call_simple(**kwargs)
  return helpers.run(graph, mesh, layers.routing_metrics(graph),
                     variable_values=weights, variables_out=True)


def _assert_same_routing(got, want):
  for name in want:
    if name.endswith(("/expert_fraction", "/aux_loss", "/router_confidence")):
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5,
                                 atol=1e-7, err_msg=name)


def test_padding_takes_no_capacity_and_no_aux_loss_in_a_bitransformer():
  """The Bitransformer derives sequence ids from the tokens (0 is padding):
  a padded batch routes exactly as the same sequences without padding."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      ["models/switch_tiny.gin"],
      ['mtf_switch.TokensChooseRouter.policy = "argmax"'])
  model = models.make_bitransformer(16)
  rng = np.random.RandomState(4)
  inputs = helpers.random_tokens(rng, 2, 16, 16, num_padding=13)
  targets = helpers.random_tokens(rng, 2, 8, 16, num_padding=6)
  padded, weights = _routing_of_model(model, targets, inputs)
  unpadded, _ = _routing_of_model(model, targets[:, :2], inputs[:, :3],
                                  weights=weights)
  assert len([n for n in padded if n.endswith("/expert_fraction")]) == 2
  _assert_same_routing(padded, unpadded)


def test_decoder_only_model_routes_padding_unless_given_sequence_ids():
  """mesh-tensorflow's Unitransformer has no way to tell padding from
  tokens without `sequence_id`: padding then takes capacity and enters the
  aux loss.  Passing sequence_id (0 at padding, as T5's packed LM features
  do) keeps it out."""
  model = helpers.tiny_switch_lm()
  rng = np.random.RandomState(6)
  targets = helpers.random_tokens(rng, 2, 16, 16, num_padding=10)
  unpadded, weights = _routing_of_model(model, targets[:, :6])
  with_ids, _ = _routing_of_model(model, targets,
                                  sequence_id=np.minimum(targets, 1),
                                  weights=weights)
  _assert_same_routing(with_ids, unpadded)
  without_ids, _ = _routing_of_model(model, targets, weights=weights)
  name = [n for n in unpadded if n.endswith("/expert_fraction")][0]
  # 32 positions counted instead of 12 real tokens.
  counts = without_ids[name] * 32
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
  assert not np.allclose(without_ids[name], unpadded[name])


def test_z_loss_is_added_to_the_losses_when_on():
  x = np.random.RandomState(1).randn(BATCH, LENGTH, D_MODEL)
  got, variables = _run_layer(_layer(z_loss_coef=1e-3), x)
  router_w = helpers.weights_by_role(variables, 4)["router_w"]
  want = numpy_reference.route(
      (x.reshape(-1, LENGTH, D_MODEL) @ router_w), 1, 2, z_loss_coef=1e-3)
  np.testing.assert_allclose(got["loss_1"], want["z_loss"], rtol=1e-5)
  got, _ = _run_layer(_layer(), x)
  assert "loss_1" not in got


def test_eval_uses_the_eval_capacity_factor():
  x = np.random.RandomState(2).randn(BATCH, LENGTH, D_MODEL)
  layer = _layer(capacity_factor_train=0.25, capacity_factor_eval=4.0)
  prefix = "switch/"
  trained, _ = _run_layer(layer, x, train_mode=True)
  evaluated, _ = _run_layer(layer, x, train_mode=False)
  # One slot per expert and group of 8 tokens: at least half are dropped.
  assert trained[prefix + "dropped_fraction"] >= 0.5
  assert evaluated[prefix + "dropped_fraction"] == 0


def test_bfloat16_model_keeps_router_in_float32():
  """Selective precision (Section 2.4): router matmul, softmax and losses in
  float32; dispatch and combine einsums in bfloat16."""
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim, length_dim = mtf.Dimension("batch", 2), mtf.Dimension("length", 8)
  x = mtf.cast(mtf.random_uniform(mesh, [batch_dim, length_dim,
                                         mtf.Dimension("d_model", 4)]),
               tf.bfloat16)
  context = helpers.make_context(mesh, batch_dim, length_dim,
                                 activation_dtype=tf.bfloat16)
  y = _layer().call(context, x)
  assert y.dtype == tf.bfloat16
  router_matmul, softmax_ops = helpers.router_ops(graph)
  assert router_matmul.outputs[0].dtype == tf.float32
  assert all(t.dtype == tf.float32 for t in router_matmul.inputs)
  assert all(op.outputs[0].dtype == tf.float32 for op in softmax_ops)
  einsums = [op for op in graph.operations if isinstance(op, mtf.EinsumOperation)]
  dims_of = lambda op: set(op.outputs[0].shape.dimension_names)
  dispatch_einsums = [op for op in einsums
                      if {"experts_unsplit", "capacity"} <= dims_of(op)
                      and "d_model" in dims_of(op)]
  combine_einsums = [op for op in einsums if dims_of(op) ==
                     {"batch", "group_size", "d_model"}]
  assert dispatch_einsums and combine_einsums
  for op in dispatch_einsums + combine_einsums:
    assert all(t.dtype == tf.bfloat16 for t in op.inputs), op.name
  metrics = layers.routing_metrics(graph)
  assert all(m.dtype == tf.float32 for m in metrics.values())


@pytest.mark.parametrize("k", [1, 2])
def test_bfloat16_layer_runs_close_to_float32_with_identical_routing(k):
  """Section 2.4: in a bfloat16 layer the router still computes in float32,
  so on bfloat16-representable inputs its probabilities, drops and aux loss
  are those of a float32 layer, bit for bit; the experts' output differs
  only by bfloat16 rounding."""
  rng = np.random.RandomState(5)
  x = helpers.to_bfloat16(rng.randn(BATCH, LENGTH, D_MODEL))
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[3, 4:] = 0
  layer = _layer(num_selected_experts=k, capacity_factor_train=0.75)
  got16, weights16 = _run_layer(layer, x, sequence_id,
                                activation_dtype=tf.bfloat16)
  got32, weights32 = _run_layer(layer, x, sequence_id)
  for name, (value, _) in weights32.items():
    np.testing.assert_array_equal(weights16[name][0], value)
  for name in ("switch/router_confidence", "switch/router_entropy",
               "switch/dropped_fraction", "switch/aux_loss"):
    assert got16[name] == got32[name], name
  # The loss the model adds is the same aux loss in the activation dtype.
  assert got16["loss_0"] == helpers.to_bfloat16(got32["switch/aux_loss"])
  assert got32["switch/dropped_fraction"] > 0
  assert not np.array_equal(got16["y"], got32["y"])
  scale = np.abs(got32["y"]).max()
  np.testing.assert_allclose(got16["y"], got32["y"], rtol=0,
                             atol=2e-2 * scale)


def test_bfloat16_tiny_model_loss_and_gradients_close_to_float32():
  tokens = helpers.random_tokens(np.random.RandomState(2), 4, 16, 16)
  got16, _ = helpers.lm_loss_and_grads("", "", tokens,
                                       activation_dtype=tf.bfloat16)
  got32, _ = helpers.lm_loss_and_grads("", "", tokens)
  assert got16["loss"] != got32["loss"]
  np.testing.assert_allclose(got16["loss"], got32["loss"], rtol=1e-2)
  for name, want in got32.items():
    if name.startswith("grad/"):
      assert np.all(np.isfinite(got16[name])), name
      # Whole-gradient agreement, relative to its size (bfloat16 keeps 8
      # bits of mantissa; sums over tokens add up their rounding).
      error = np.linalg.norm(got16[name] - want)
      assert error <= 0.1 * np.linalg.norm(want) + 1e-6, name


@pytest.mark.parametrize("kwargs,match", [
    (dict(capacity_factor_train=0.0), r"capacity_factor_train must be > 0"),
    (dict(capacity_factor_eval=-1.0), r"capacity_factor_eval must be > 0"),
    (dict(policy="softmax"), r"unknown router policy 'softmax'"),
    (dict(activation="swish"), r"activation must be one of .*'swish'"),
    (dict(num_experts=0), r"num_experts must be an int >= 1, got 0"),
    (dict(num_selected_experts=0), r"num_selected_experts must be an int >= 1 .* got 0"),
    (dict(expert_dropout_rate=1.0), r"expert_dropout_rate must be in"),
    (dict(dispatch_mode="scatter"), r"dispatch_mode must be one of .*'scatter'"),
    (dict(min_capacity=0), r"min_capacity must be an int >= 1 .*got 0"),
])
def test_bad_configuration_is_refused_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    _layer(**kwargs)


def test_router_with_more_choices_than_experts_is_refused():
  router = routers.TokensChooseRouter(num_selected_experts=2)
  with pytest.raises(ValueError, match=r"at most num_experts=1, got 2"):
    layers.SwitchFeedForward(num_experts=1, router=router)


def _build(layer, mesh_shape, layout, batch=BATCH, length=LENGTH):
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim = mtf.Dimension("batch", batch)
  length_dim = mtf.Dimension("length", length)
  x = mtf.random_uniform(mesh, [batch_dim, length_dim,
                                mtf.Dimension("d_model", 4)])
  layer.call(helpers.make_context(mesh, batch_dim, length_dim,
                                  layout=layout, mesh_shape=mesh_shape), x)


def test_experts_not_divisible_by_their_mesh_axis_are_refused():
  with pytest.raises(ValueError, match=r"num_experts=4 .* 3 shards"):
    _build(_layer(), "batch:1,expert:3", "experts:expert")


@pytest.mark.parametrize("tokens,requested,shards,chosen", [
    (32, 8, 1, 8),          # divides: kept
    (32, 12, 1, 8),         # largest divisor below
    (4, 1024, 1, 4),        # incremental decoding: one token per sequence
    (32 * 114, 1024, 32, 114),   # C4 targets on 32 cores
    (32 * 512, 1024, 32, 512),   # C4 inputs on 32 cores
])
def test_choose_group_size(tokens, requested, shards, chosen):
  assert layers.choose_group_size(tokens, requested, shards) == chosen


def test_tokens_that_do_not_split_over_the_batch_axis_are_refused():
  with pytest.raises(ValueError, match=r"6 tokens .* 4 shards"):
    layers.choose_group_size(6, 4, 4)


def test_groups_follow_the_batch_split():
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim, length_dim = mtf.Dimension("batch", 4), mtf.Dimension("length", 8)
  x = mtf.random_uniform(mesh, [batch_dim, length_dim,
                                mtf.Dimension("d_model", 4)])
  context = helpers.make_context(mesh, batch_dim, length_dim,
                                 layout="batch:batch", mesh_shape="batch:4")
  _layer(group_size=32).call(context, x)
  router_output_shapes = [op.outputs[0].shape.to_integer_list
                          for op in graph.operations
                          if "router" in op.name and op.outputs]
  # 32 tokens over 4 batch shards: groups of 8, one per shard.
  assert [4, 8, 4] in router_output_shapes


@pytest.mark.parametrize("mesh_shape,layout", [
    # expert + data parallelism on separate mesh axes
    ("batch:2,expert:2", "batch:batch;experts:expert"),
    # experts over the data-parallel axis (T5's default "experts:batch")
    ("batch:2", "batch:batch;experts:batch"),
    # expert + model parallelism: experts split, and d_ff inside each expert
    ("expert:2,model:2", "experts:expert;d_ff:model;heads:model"),
    # expert + model + data
    ("batch:2,expert:2,model:2",
     "batch:batch;experts:expert;d_ff:model;heads:model"),
])
def test_loss_and_gradients_match_a_single_device(mesh_shape, layout):
  tokens = helpers.random_tokens(np.random.RandomState(0), 4, 8, 16,
                                 num_padding=2)
  single, variables = helpers.lm_loss_and_grads("", "", tokens)
  split, _ = helpers.lm_loss_and_grads(mesh_shape, layout, tokens, variables)
  np.testing.assert_allclose(split["loss"], single["loss"], rtol=1e-5)
  helpers.assert_same_loss_and_gradients(split, single, "router")


@pytest.mark.parametrize("dispatch_mode", ["einsum", "dropless"])
def test_incremental_decoding_agrees_with_full_sequence_scoring(
    dispatch_mode):
  """Greedy one-token-at-a-time decoding (layers see [batch, d_model]) picks
  the tokens that the full-sequence pass ranks first."""
  model = helpers.tiny_switch_lm(bindings=[
      "mtf_switch.SwitchFeedForward.capacity_factor_eval = 4.0",
      "mtf_switch.SwitchFeedForward.dispatch_mode = %r" % dispatch_mode])
  tf.reset_default_graph()
  tf.set_random_seed(0)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("batch", 4), mtf.Dimension("length", 8)]
  prompt = np.zeros((4, 8), np.int32)
  prompt[:, 0] = [3, 5, 7, 9]
  decoded = model.sample_autoregressive(
      helpers.import_array(mesh, prompt, dims), temperature=0.0,
      never_end=True)
  logits, _ = model.call_simple(
      inputs=mtf.shift(decoded, offset=1, dim=dims[1], wrap=False),
      targets=None, compute_loss=False, mode=tf.estimator.ModeKeys.EVAL)
  got = helpers.run(graph, mesh, {
      "decoded": decoded,
      "best": mtf.argmax(logits, logits.shape.dims[-1])})
  np.testing.assert_array_equal(got["decoded"][:, 0], prompt[:, 0])
  np.testing.assert_array_equal(got["decoded"][:, 1:], got["best"][:, 1:])


@pytest.mark.parametrize("dispatch_mode", ["einsum", "dropless"])
def test_tiny_switch_model_training_loss_falls(dispatch_mode):
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      ["models/switch_tiny.gin"],
      ["mtf_switch.SwitchFeedForward.dispatch_mode = %r" % dispatch_mode])
  step = step_lib.build_step_graph(models.make_bitransformer(32), 8, 8, 8)
  tokens = helpers.random_tokens(np.random.RandomState(0), 8, 8, 32)
  experts = [w for w in step.weights
             if "SwitchFeedForward/w" in w.op.name]
  assert len(experts) == 4  # wi and wo of the encoder's and decoder's
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    before = sess.run(experts)
    losses = np.array([
        sess.run([step.loss, step.train_op],
                 {step.inputs: tokens, step.targets: tokens})[0]
        for _ in range(40)])
    after = sess.run(experts)
  assert losses[-5:].mean() < losses[:5].mean() - 0.5, losses
  # The experts take part: every expert weight learned (an expert whose
  # output were lost would get no gradient and keep its initial values).
  for w, b, a in zip(experts, before, after):
    moved = np.abs(a - b).reshape(a.shape[0], -1).max(axis=1)
    assert (moved > 1e-4).all(), (w.op.name, moved)


@pytest.mark.parametrize("dispatch_mode", ["einsum", "index"])
def test_dropless_eval_drops_nothing_when_every_token_picks_one_expert(
    dispatch_mode):
  """Every token points the same way, so all choose one expert; at
  capacity factor 0.5 most would be dropped, dropless keeps them all."""
  rng = np.random.RandomState(3)
  direction = rng.randn(D_MODEL)
  x = (rng.uniform(0.5, 2.0, (BATCH, LENGTH, 1)) * direction
       + 1e-3 * rng.randn(BATCH, LENGTH, D_MODEL))
  sequence_id = np.ones((BATCH, LENGTH), np.int32)
  sequence_id[1, 6:] = 0  # padding
  layer = _layer(capacity_factor_eval=0.5, dropless_eval=True,
                 dispatch_mode=dispatch_mode)
  got, variables = _run_layer(layer, x, sequence_id, train_mode=False)
  assert got["switch/expert_fraction_max"] == pytest.approx(1.0)
  assert got["switch/dropped_fraction"] == 0.0
  want_y, _ = numpy_reference.switch_layer(
      x, k=1, capacity=LENGTH, group_size=LENGTH,
      nonpadding=(sequence_id > 0).astype(float),
      **helpers.weights_by_role(variables, 4))
  np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)
  assert np.abs(want_y[sequence_id > 0]).min() > 0  # every real token served

  dropping = _layer(capacity_factor_eval=0.5, dispatch_mode=dispatch_mode)
  got, _ = _run_layer(dropping, x, sequence_id, train_mode=False)
  assert got["switch/dropped_fraction"] > 0.5
