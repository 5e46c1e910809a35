"""Routers as objects: settings checked where they are owned, gin wiring,
and a new router as one class and one gin line."""
import gin
import helpers
import mesh_tensorflow as mtf
import numpy as np
import numpy_reference
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import routers
from mtf_switch import routing
from mtf_switch.training import step as step_lib


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_selected_experts=0), r"num_selected_experts must be an int >= 1 .* got 0"),
    (dict(policy="gumbel"), r"'gumbel'.*argmax, input_jitter"),
    (dict(dropout_rate=1.5), r"dropout_rate must be in \[0, 1\), got 1.5"),
    (dict(aux_loss_coef=-0.01), r"aux_loss_coef must be >= 0.*-0.01"),
    (dict(z_loss_coef=-1.0), r"z_loss_coef must be >= 0.*-1.0"),
    (dict(float32_router="bfloat16"),
     r"float32_router must be True .* or False .*got 'bfloat16'"),
])
def test_tokens_choose_router_refuses_bad_settings(kwargs, match):
  with pytest.raises(ValueError, match=match):
    routers.TokensChooseRouter(**kwargs)


def test_zoo_gin_files_configure_the_router():
  gin.parse_config_file("models/switch_base.gin")
  switch = layers.SwitchFeedForward()
  assert isinstance(switch.router, routers.TokensChooseRouter)
  assert (switch.router.num_selected_experts, switch.router.policy,
          switch.router.aux_loss_coef) == (1, "input_jitter", 0.01)
  gin.clear_config()
  gin.parse_config_file("models/moe_base.gin")
  assert layers.SwitchFeedForward().router.num_selected_experts == 2


@gin.configurable(module="test_routers")
class FirstExpertRouter(routers.Router):
  """Sends every real token to expert 0: a router written against the
  base class and the shared math only."""

  def route(self, logits, capacity, nonpadding, train, activation_dtype,
            one_hot_tensors):
    experts_dim = logits.shape.dims[-1]
    nonpadding = mtf.to_float(nonpadding)
    probs = mtf.softmax(logits, reduced_dim=experts_dim)
    scores = mtf.one_hot(mtf.zeros(logits.mesh, logits.shape.dims[:2],
                                   tf.int32), experts_dim, dtype=tf.float32)
    assignments, first_choice = routing.top_k_assignments(
        scores, probs, 1, nonpadding)
    return routing.instructions(
        logits, probs, assignments, first_choice, nonpadding, capacity,
        activation_dtype, self.aux_loss_coef, self.z_loss_coef,
        one_hot_tensors)


@pytest.mark.parametrize("dispatch_mode", ["einsum", "index"])
def test_a_new_router_is_one_class_and_one_gin_line(dispatch_mode):
  gin.parse_config([
      "mtf_switch.SwitchFeedForward.router = "
      "@test_routers.FirstExpertRouter()"])
  layer = layers.SwitchFeedForward(
      num_experts=4, hidden_size=helpers.D_FF, group_size=helpers.LENGTH,
      capacity_factor_train=1.0, min_capacity=1, dispatch_mode=dispatch_mode)
  assert isinstance(layer.router, FirstExpertRouter)
  rng = np.random.RandomState(5)
  x = rng.randn(helpers.BATCH, helpers.LENGTH, helpers.D_MODEL)
  sequence_id = np.ones(x.shape[:2], np.int32)
  sequence_id[0, 1] = 0  # padding takes no slot
  got, variables = helpers.run_layer(layer, x, sequence_id)
  weights = helpers.weights_by_role(variables, 4)
  # Capacity 2 (8 tokens, 4 experts): the first two real tokens of each
  # sequence reach expert 0, with gate p_0(x); every other output is zero.
  tokens = x.reshape(-1, helpers.D_MODEL)
  probs = numpy_reference.softmax(tokens @ weights["router_w"])
  expert_0 = numpy_reference.relu(tokens @ weights["wi"][0]) @ weights["wo"][0]
  want = np.zeros_like(tokens)
  for b in range(helpers.BATCH):
    real = [b * helpers.LENGTH + s for s in range(helpers.LENGTH)
            if sequence_id[b, s]]
    for t in real[:2]:
      want[t] = probs[t, 0] * expert_0[t]
  np.testing.assert_allclose(got["y"].reshape(-1, helpers.D_MODEL), want,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["switch/expert_fraction"], [1, 0, 0, 0])
  num_real = sequence_id.sum()
  np.testing.assert_allclose(got["switch/dropped_fraction"],
                             1 - 2 * helpers.BATCH / num_real, rtol=1e-6)


@pytest.mark.parametrize("dispatch_mode", ["einsum", "index"])
@pytest.mark.parametrize("router,reference", [
    ("BatchPrioritizedRouter", dict(batch_prioritized=True)),
    ("NoTokenLeftBehindRouter", dict(passes=2))])
def test_router_variants_are_a_gin_line_and_match_numpy(dispatch_mode, router,
                                                        reference):
  gin.parse_config([
      "mtf_switch.SwitchFeedForward.router = @mtf_switch.%s()" % router,
      "mtf_switch.TokensChooseRouter.policy = 'argmax'"])
  layer = layers.SwitchFeedForward(
      num_experts=4, hidden_size=helpers.D_FF, group_size=helpers.LENGTH,
      capacity_factor_train=0.5, min_capacity=1, dispatch_mode=dispatch_mode)
  assert isinstance(layer.router, getattr(routers, router))
  assert layer.router.policy == "argmax"  # TokensChooseRouter's bindings
  rng = np.random.RandomState(11)
  x = rng.randn(helpers.BATCH, helpers.LENGTH, helpers.D_MODEL)
  got, variables = helpers.run_layer(layer, x)
  weights = helpers.weights_by_role(variables, 4)
  want, routed = numpy_reference.switch_layer(
      x, k=1, capacity=1, group_size=helpers.LENGTH, **weights, **reference)
  plain, _ = numpy_reference.switch_layer(
      x, k=1, capacity=1, group_size=helpers.LENGTH, **weights)
  assert routed["dropped_fraction"] > 0.3
  assert not np.allclose(want, plain)  # the variant routes otherwise
  np.testing.assert_allclose(got["y"], want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["switch/dropped_fraction"],
                             routed["dropped_fraction"], rtol=1e-5)


def test_no_token_left_behind_router_is_a_gin_line_and_checks_its_passes():
  gin.parse_config([
      "mtf_switch.SwitchFeedForward.router = "
      "@mtf_switch.NoTokenLeftBehindRouter()",
      "mtf_switch.NoTokenLeftBehindRouter.passes = 3"])
  layer = layers.SwitchFeedForward(num_experts=4)
  assert isinstance(layer.router, routers.NoTokenLeftBehindRouter)
  assert layer.router.passes == 3
  gin.clear_config()
  with pytest.raises(ValueError, match="passes=5 exceeds num_experts=4"):
    layers.SwitchFeedForward(
        num_experts=4, router=routers.NoTokenLeftBehindRouter(passes=5))
  with pytest.raises(ValueError, match="passes must be an int >= 2"):
    routers.NoTokenLeftBehindRouter(passes=1)
  with pytest.raises(ValueError, match="re-routes top-1 routing"):
    routers.NoTokenLeftBehindRouter(num_selected_experts=2)


@pytest.mark.parametrize("capacity", [2, 5])
def test_experts_choose_router_matches_numpy(capacity):
  rng = np.random.RandomState(capacity)
  logits = rng.randn(2, 8, 4) * 2
  nonpadding = np.ones((2, 8))
  nonpadding[1, 6:] = 0
  with tf.Graph().as_default():
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    dims = [mtf.Dimension("batch", 2), mtf.Dimension("group_size", 8),
            mtf.Dimension("experts_unsplit", 4)]
    result = routers.ExpertsChooseRouter().route(
        helpers.import_array(mesh, logits.astype(np.float32), dims), capacity,
        helpers.import_array(mesh, nonpadding.astype(np.float32), dims[:2]),
        False, tf.float32, True)
    got = helpers.run(graph, mesh, dict(
        dispatch=result.dispatch, combine=result.combine,
        dropped_fraction=result.metrics["dropped_fraction"],
        aux_loss=result.metrics["aux_loss"]))
  want = numpy_reference.experts_choose(logits, capacity, nonpadding)
  np.testing.assert_allclose(got["dispatch"], want["dispatch"], atol=1e-6)
  np.testing.assert_allclose(got["combine"], want["combine"], atol=1e-5)
  np.testing.assert_allclose(got["dropped_fraction"],
                             want["dropped_fraction"], atol=1e-6)
  assert got["aux_loss"] == 0.0  # every expert is full: no balancing loss
  # Every expert is full (each group has more real tokens than capacity).
  np.testing.assert_allclose(got["dispatch"].sum((1, 3)), capacity)
  assert got["dispatch"][nonpadding == 0].sum() == 0
  if capacity == 2:
    assert want["dropped_fraction"] > 0  # 8 slots for 14 tokens


def test_experts_choose_router_is_refused_in_causal_layers():
  lm = helpers.tiny_switch_lm(bindings=[
      "mtf_switch.SwitchFeedForward.router = "
      "@mtf_switch.ExpertsChooseRouter()"])
  with pytest.raises(ValueError, match="causal layer .* later tokens"):
    step_lib.build_step_graph(lm, 2, 8, 8)


@pytest.mark.parametrize("dispatch_mode", ["einsum", "index"])
def test_experts_choose_router_in_an_encoder_layer_matches_numpy(
    dispatch_mode):
  layer = layers.SwitchFeedForward(
      num_experts=4, hidden_size=helpers.D_FF, group_size=helpers.LENGTH,
      capacity_factor_train=1.0, min_capacity=1, dispatch_mode=dispatch_mode,
      router=routers.ExpertsChooseRouter())
  rng = np.random.RandomState(2)
  x = rng.randn(helpers.BATCH, helpers.LENGTH, helpers.D_MODEL)
  got, variables = helpers.run_layer(layer, x)
  weights = helpers.weights_by_role(variables, 4)
  tokens = x.reshape(-1, helpers.LENGTH, helpers.D_MODEL)
  capacity = helpers.LENGTH // 4
  routed = numpy_reference.experts_choose(tokens @ weights["router_w"],
                                          capacity)
  want = np.zeros_like(tokens)
  for g, s, e, c in zip(*np.nonzero(routed["dispatch"])):
    hidden = numpy_reference.relu(tokens[g, s] @ weights["wi"][e])
    want[g, s] += routed["combine"][g, s, e, c] * (hidden @ weights["wo"][e])
  np.testing.assert_allclose(got["y"], want.reshape(x.shape), rtol=1e-4,
                             atol=1e-5)


def _argmax_layer(float32_router):
  return layers.SwitchFeedForward(
      router=routers.TokensChooseRouter(policy="argmax",
                                        float32_router=float32_router),
      num_experts=4, hidden_size=helpers.D_FF, group_size=helpers.LENGTH,
      capacity_factor_train=1.0, min_capacity=1)


@pytest.mark.parametrize("float32_router", [True, False])
def test_router_matmul_and_softmax_dtype(float32_router):
  """Selective precision (Section 2.4) keeps the router's matmul and
  softmax in float32 in a bfloat16 model; float32_router=False (Table 2's
  "bfloat16" row) takes them in bfloat16."""
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim = mtf.Dimension("batch", 2)
  length_dim = mtf.Dimension("length", helpers.LENGTH)
  x = mtf.cast(mtf.random_uniform(
      mesh, [batch_dim, length_dim, mtf.Dimension("d_model", 4)]),
               tf.bfloat16)
  context = helpers.make_context(mesh, batch_dim, length_dim,
                                 activation_dtype=tf.bfloat16)
  _argmax_layer(float32_router).call(context, x)
  want = tf.float32 if float32_router else tf.bfloat16
  router_matmul, softmax_ops = helpers.router_ops(graph)
  assert [t.dtype for t in router_matmul.inputs] == [want, want]
  assert router_matmul.outputs[0].dtype == want
  assert all(op.outputs[0].dtype == want for op in softmax_ops)


def test_bfloat16_router_rounds_its_probabilities():
  """With bfloat16 activations the float32 router's probabilities are a
  float32 layer's (on bfloat16-representable inputs), the bfloat16
  router's carry bfloat16 rounding; with float32 activations the two
  routers are one."""
  x = helpers.to_bfloat16(np.random.RandomState(3).randn(
      helpers.BATCH, helpers.LENGTH, helpers.D_MODEL))

  def routing_stats(float32_router, activation_dtype):
    got, _ = helpers.run_layer(_argmax_layer(float32_router), x,
                               activation_dtype=activation_dtype)
    return np.array([got["switch/router_confidence"],
                     got["switch/router_entropy"]])

  float32_layer = routing_stats(True, tf.float32)
  np.testing.assert_array_equal(routing_stats(True, tf.bfloat16),
                                float32_layer)
  np.testing.assert_array_equal(routing_stats(False, tf.float32),
                                float32_layer)
  bfloat16_router = routing_stats(False, tf.bfloat16)
  assert np.all(bfloat16_router != float32_layer)
  np.testing.assert_allclose(bfloat16_router, float32_layer, rtol=2e-2)


@pytest.mark.parametrize("router,match", [
    (routers.BatchPrioritizedRouter(),
     r"BatchPrioritizedRouter .* drops none: use "
     r"@mtf_switch.TokensChooseRouter\(\)"),
    (routers.NoTokenLeftBehindRouter(),
     r"NoTokenLeftBehindRouter .* leaves none: use "
     r"@mtf_switch.TokensChooseRouter\(\)"),
    (routers.ExpertsChooseRouter(),
     r"ExpertsChooseRouter .* no capacity: use it with "
     r"dispatch_mode='einsum' or 'index'"),
])
def test_routers_that_need_a_capacity_refuse_dropless_dispatch(router, match):
  with pytest.raises(ValueError, match=match):
    layers.SwitchFeedForward(num_experts=4, router=router,
                             dispatch_mode="dropless")
  # With capacity buffers they are fine.
  layers.SwitchFeedForward(num_experts=4, router=router,
                           dispatch_mode="index")


@pytest.mark.parametrize("router", [
    routers.TokensChooseRouter(num_selected_experts=2), FirstExpertRouter()])
def test_tokens_choose_routers_serve_dropless_dispatch(router):
  layer = layers.SwitchFeedForward(num_experts=4, router=router,
                                   dispatch_mode="dropless")
  # The router is given the whole group: every choice fits.
  assert layer.capacity(64, train=True) == 64
  assert layer.capacity(64, train=False) == 64
  assert layers.SwitchFeedForward(num_experts=4).capacity(64, True) == 20
