"""Tests of mtf_switch.routing against the numpy reference of the paper."""
import helpers
import mesh_tensorflow as mtf
import numpy as np
import numpy_reference
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import routing

METRICS = ("aux_loss", "z_loss", "dropped_fraction", "expert_fraction",
           "router_confidence", "router_entropy")


def _route(logits, k, capacity, nonpadding=None, seed=None, **kwargs):
  """Runs routing.route on numpy logits [G, S, E]; returns numpy values."""
  with tf.Graph().as_default():
    tf.set_random_seed(seed)
    return _route_in_graph(logits, k, capacity, nonpadding, **kwargs)


def _route_in_graph(logits, k, capacity, nonpadding, **kwargs):
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  g, s, e = logits.shape
  dims = [mtf.Dimension("batch", g), mtf.Dimension("group_size", s),
          mtf.Dimension("experts_unsplit", e)]
  mtf_logits = helpers.import_array(mesh, logits.astype(np.float32), dims)
  mtf_nonpadding = None
  if nonpadding is not None:
    mtf_nonpadding = helpers.import_array(
        mesh, nonpadding.astype(np.float32), dims[:2])
  result = routing.route(mtf_logits, k, capacity, nonpadding=mtf_nonpadding,
                         **kwargs)
  outputs = dict(result.metrics, dispatch=result.dispatch,
                 combine=result.combine)
  return helpers.run(graph, mesh, outputs)


@pytest.mark.parametrize("batch_prioritized", [False, True])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("capacity", [2, 3, 16])
def test_route_matches_numpy_reference(k, capacity, batch_prioritized):
  rng = np.random.RandomState(k * 10 + capacity)
  logits = rng.randn(3, 16, 4) * 2
  nonpadding = np.ones((3, 16))
  nonpadding[1, 10:] = 0  # a padded sequence end
  nonpadding[2, ::3] = 0  # scattered padding
  got = _route(logits, k, capacity, nonpadding, aux_loss_coef=0.01,
               z_loss_coef=1e-3, batch_prioritized=batch_prioritized)
  want = numpy_reference.route(logits, k, capacity, nonpadding,
                               aux_loss_coef=0.01, z_loss_coef=1e-3,
                               batch_prioritized=batch_prioritized)
  np.testing.assert_allclose(got["dispatch"], want["dispatch"], atol=1e-6)
  np.testing.assert_allclose(got["combine"], want["combine"], atol=1e-5)
  for name in METRICS:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6,
                               err_msg=name)
  if capacity == 2:  # over capacity: the case must actually drop tokens
    assert want["dropped_fraction"] > 0.2
  # Padding never takes a slot.
  assert got["dispatch"][nonpadding == 0].sum() == 0


@pytest.mark.parametrize("capacity,passes", [(2, 2), (3, 2), (2, 4),
                                             (16, 2)])
def test_no_token_left_behind_matches_numpy_reference(capacity, passes):
  rng = np.random.RandomState(capacity * 10 + passes)
  logits = rng.randn(3, 16, 4) * 2
  nonpadding = np.ones((3, 16))
  nonpadding[1, 10:] = 0
  got = _route(logits, 1, capacity, nonpadding, passes=passes)
  want = numpy_reference.route(logits, 1, capacity, nonpadding,
                               passes=passes)
  plain = numpy_reference.route(logits, 1, capacity, nonpadding)
  np.testing.assert_allclose(got["dispatch"], want["dispatch"], atol=1e-6)
  np.testing.assert_allclose(got["combine"], want["combine"], atol=1e-5)
  for name in METRICS:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6,
                               err_msg=name)
  assert got["dispatch"].sum((2, 3)).max() <= 1  # one expert per token
  if capacity < 16:  # the extra passes place tokens plain routing drops
    assert want["dropped_fraction"] < plain["dropped_fraction"]


def test_batch_prioritized_routing_drops_the_least_confident_tokens():
  # All 4 tokens prefer expert 0, the later ones more confidently; capacity
  # 2 keeps the last two (position order would keep the first two), and
  # the most confident token takes slot 0.
  logits = np.array([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]])
  got = _route(logits, 1, 2, batch_prioritized=True)
  np.testing.assert_array_equal(got["dispatch"].sum((2, 3))[0], [0, 0, 1, 1])
  np.testing.assert_array_equal(got["dispatch"][0, 3, 0], [1, 0])
  np.testing.assert_array_equal(got["dispatch"][0, 2, 0], [0, 1])


def test_position_is_exclusive_cumsum_so_capacity_tokens_fit():
  # All 4 tokens prefer expert 0; capacity 2 keeps exactly the first two
  # (an inclusive cumsum would keep only one).
  logits = np.tile(np.array([[5.0, 0.0]]), (1, 4, 1))
  got = _route(logits, 1, 2)
  kept_tokens = got["dispatch"].sum((2, 3))[0]
  np.testing.assert_array_equal(kept_tokens, [1, 1, 0, 0])
  np.testing.assert_array_equal(got["dispatch"][0, 0, 0], [1, 0])
  np.testing.assert_array_equal(got["dispatch"][0, 1, 0], [0, 1])
  np.testing.assert_allclose(got["dropped_fraction"], 0.5)


@pytest.mark.parametrize("k", [1, 2])
def test_a_batch_of_padding_only_drops_nothing(k):
  """No real token, no assignment dropped: the dropped fraction is 0, not
  1 (a dropless layer must read 0 whatever its batch)."""
  logits = np.random.RandomState(k).randn(2, 8, 4)
  nonpadding = np.zeros((2, 8))
  got = _route(logits, k, 2, nonpadding)
  want = numpy_reference.route(logits, k, 2, nonpadding)
  assert got["dropped_fraction"] == want["dropped_fraction"] == 0.0
  one_real = nonpadding.copy()
  one_real[1, 3] = 1
  assert _route(logits, k, 2, one_real)["dropped_fraction"] == 0.0
  assert _route(logits, k, 0, one_real)["dropped_fraction"] == 1.0


def test_top2_second_choices_queue_after_first_choices():
  # Token 0 picks expert 1 first and expert 0 second; token 1 picks expert 0
  # first.  Token 1's first choice takes expert 0's slot 0 even though it
  # comes later in token order.
  logits = np.array([[[1.0, 3.0, -5.0], [3.0, 1.0, -5.0]]])
  got = _route(logits, 2, 2)
  assert got["dispatch"][0, 1, 0, 0] == 1
  assert got["dispatch"][0, 0, 0, 1] == 1
  assert got["dispatch"][0, 0, 1, 0] == 1
  # Gates of a token sum to one after renormalization.
  np.testing.assert_allclose(got["combine"].sum((2, 3)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_uniform_router_gives_load_balancing_loss_alpha(k):
  """Section 2.2: the loss is alpha when the router's probabilities are
  uniform, whatever the (here degenerate) assignment."""
  logits = np.zeros((2, 8, 4))
  nonpadding = np.ones((2, 8))
  nonpadding[0, 5:] = 0
  got = _route(logits, k, 8, nonpadding, aux_loss_coef=0.01)
  np.testing.assert_allclose(got["aux_loss"], 0.01, rtol=1e-6)


def test_balanced_confident_router_loss_is_alpha_and_skewed_is_larger():
  balanced = np.eye(4)[np.arange(8) % 4][None] * 20.0
  skewed = np.eye(4)[np.zeros(8, int)][None] * 20.0
  alpha = 0.01
  np.testing.assert_allclose(_route(balanced, 1, 8)["aux_loss"], alpha,
                             rtol=1e-4)
  # All tokens to one confident expert: alpha * N.
  np.testing.assert_allclose(_route(skewed, 1, 8)["aux_loss"], alpha * 4,
                             rtol=1e-4)


def test_expert_capacity():
  assert routing.expert_capacity(1024, 8, 1.25) == 160
  assert routing.expert_capacity(1024, 128, 1.0) == 8
  assert routing.expert_capacity(64, 128, 1.0) == 4  # min capacity
  assert routing.expert_capacity(2, 4, 1.0) == 2  # never above group_size
  assert routing.expert_capacity(10, 4, 1.0, min_capacity=1) == 3  # ceil


@pytest.mark.parametrize("factor", [0, -1.0])
def test_expert_capacity_refuses_non_positive_factor(factor):
  with pytest.raises(ValueError, match=r"capacity_factor must be > 0.*%r"
                     % factor):
    routing.expert_capacity(64, 4, factor)


def test_unknown_policy_is_refused_with_the_choices():
  with pytest.raises(ValueError, match="'gumbel'.*argmax, input_jitter"):
    routing.check_policy("gumbel")


def test_sample_policy_draws_experts_from_the_router_softmax():
  probs = np.array([0.6, 0.3, 0.1])
  logits = np.tile(np.log(probs), (1, 6000, 1))
  got = _route(logits, 1, 6000, policy="sample", train=True, seed=3)
  np.testing.assert_allclose(got["expert_fraction"], probs, atol=0.03)
  # Evaluation always takes the argmax.
  got = _route(logits, 1, 6000, policy="sample", train=False)
  np.testing.assert_allclose(got["expert_fraction"], [1, 0, 0])


@pytest.mark.parametrize("policy,train,changed", [
    ("input_jitter", True, True), ("input_dropout", True, True),
    ("input_jitter", False, False), ("input_dropout", False, False),
    ("argmax", True, False), ("sample", True, False)])
def test_input_perturbations_apply_in_training_only(policy, train, changed):
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("batch", 4), mtf.Dimension("group_size", 64),
          mtf.Dimension("d_model", 8)]
  x = np.random.RandomState(0).rand(4, 64, 8).astype(np.float32) + 1.0
  perturbed = routing.perturb_router_inputs(
      helpers.import_array(mesh, x, dims), policy, train, jitter_eps=0.01,
      dropout_rate=0.1)
  got = helpers.run(graph, mesh, {"x": perturbed})["x"]
  assert (not np.allclose(got, x)) == changed
  if policy == "input_jitter" and train:
    assert np.all(np.abs(got / x - 1) <= 0.01 + 1e-6)


def test_bfloat16_dispatch_and_combine_with_float32_router_math():
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("batch", 2), mtf.Dimension("group_size", 8),
          mtf.Dimension("experts_unsplit", 4)]
  logits = helpers.import_array(
      mesh, np.random.RandomState(0).randn(2, 8, 4).astype(np.float32), dims)
  result = routing.route(logits, 1, 4, activation_dtype=tf.bfloat16)
  assert result.dispatch.dtype == tf.bfloat16
  assert result.combine.dtype == tf.bfloat16
  for name, value in result.metrics.items():
    assert value.dtype == tf.float32, name


def _cumsum(x, exclusive, layout):
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("groups", x.shape[0]),
          mtf.Dimension("group_size", x.shape[1]),
          mtf.Dimension("experts", x.shape[2])]
  mtf_x = helpers.import_array(mesh, x, dims)
  return helpers.run(graph, mesh, {
      "cumsum": routing.cumsum(mtf_x, dims[1], exclusive=exclusive)},
                     mesh_shape="b:2;e:2", layout=layout)["cumsum"]


@pytest.mark.parametrize("exclusive", [False, True])
def test_cumsum_matches_numpy_with_groups_and_experts_split(exclusive):
  x = np.random.RandomState(0).randint(0, 2, (4, 6, 4)).astype(np.float32)
  want = np.cumsum(x, axis=1) - (x if exclusive else 0)
  with tf.Graph().as_default():
    got = _cumsum(x, exclusive, layout="groups:b;experts:e")
  np.testing.assert_array_equal(got, want)


def test_cumsum_refuses_a_layout_that_splits_its_dimension():
  x = np.ones((4, 6, 4), np.float32)
  with tf.Graph().as_default():
    with pytest.raises(ValueError, match=r"cumsum runs along 'group_size', "
                       r"which the layout splits"):
      _cumsum(x, False, layout="group_size:b")
