"""Property-based tests of the Switch layer against the numpy reference.

Hypothesis draws the layer's configuration (experts, top-1 or top-2,
group size, capacity factor, minimum capacity, dispatch: einsum, index or
dropless, which has no capacity), the activation
dtype, the batch's shape, its padding (none, all, a single real token,
random) and the mesh; every draw must match numpy_reference.switch_layer
(in bfloat16: the same routing, the outputs within bfloat16 rounding).
Draws are derandomized: CI sees the same examples on every run, and a
failure prints the smallest example hypothesis found.
"""
import math

import helpers
from hypothesis import event
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import numpy_reference
import tensorflow.compat.v1 as tf

from mtf_switch import layers

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
D_MODEL = 6


@st.composite
def padding_patterns(draw, batch, length):
  """[batch, length] nonpadding: none, all, one real token, or random."""
  kind = draw(st.sampled_from(["none", "all", "one_real_token", "random"]))
  if kind == "none":
    return np.ones((batch, length), np.int32)
  if kind == "all":
    return np.zeros((batch, length), np.int32)
  if kind == "one_real_token":
    mask = np.zeros((batch, length), np.int32)
    mask[draw(st.integers(0, batch - 1)), draw(st.integers(0, length - 1))] = 1
    return mask
  bits = draw(st.lists(st.booleans(), min_size=batch * length,
                       max_size=batch * length))
  return np.array(bits, np.int32).reshape(batch, length)


@st.composite
def cases(draw, dispatch_modes=("einsum", "index")):
  """A layer configuration, a batch and a mesh that can hold them."""
  num_experts = draw(st.sampled_from([1, 2, 4, 8]))
  k = draw(st.sampled_from([1, 2] if num_experts >= 2 else [1]))
  batch = draw(st.sampled_from([1, 2, 4]))
  length = draw(st.sampled_from([3, 4, 8]))
  meshes = [("", "")]
  if batch % 2 == 0:
    meshes.append(("batch:2", "batch:batch"))
  if num_experts % 2 == 0:
    meshes.append(("experts:2", "experts:experts"))
    if batch % 2 == 0:
      meshes.append(("batch:2,experts:2", "batch:batch;experts:experts"))
  return dict(
      num_experts=num_experts, k=k, batch=batch, length=length,
      group_size=draw(st.integers(1, batch * length)),
      capacity_factor=draw(st.sampled_from([0.25, 0.5, 1.0, 1.25, 2.0, 4.0])),
      min_capacity=draw(st.integers(1, 4)),
      dispatch_mode=draw(st.sampled_from(dispatch_modes)),
      dtype=draw(st.sampled_from([tf.float32, tf.bfloat16])),
      mesh=draw(st.sampled_from(meshes)),
      nonpadding=draw(padding_patterns(batch, length)),
      seed=draw(st.integers(0, 2**16)))


@FUZZ
@given(cases())
def test_any_configuration_matches_the_numpy_reference(case):
  _check_against_the_numpy_reference(case)


@FUZZ
@given(cases(dispatch_modes=("dropless",)))
def test_any_dropless_configuration_matches_the_numpy_reference(case):
  """Dropless dispatch draws its own examples: its capacity factor and
  minimum capacity are unused, and nothing may drop."""
  _check_against_the_numpy_reference(case)


def _check_against_the_numpy_reference(case):
  # Counted by pytest --hypothesis-show-statistics.
  event("%s, top-%d, %s, %s" % (case["dtype"].name, case["k"],
                                case["mesh"][0] or "one device",
                                case["dispatch_mode"]))
  rng = np.random.RandomState(case["seed"])
  # bfloat16-representable inputs: the float32 router then sees what the
  # reference sees (Section 2.4).
  x = helpers.to_bfloat16(rng.randn(case["batch"], case["length"], D_MODEL))
  mesh_shape, layout = case["mesh"]
  shards = 2 if "batch:2" in mesh_shape else 1
  layer = helpers.switch_layer(
      num_selected_experts=case["k"], num_experts=case["num_experts"],
      group_size=case["group_size"],
      capacity_factor_train=case["capacity_factor"],
      min_capacity=case["min_capacity"],
      dispatch_mode=case["dispatch_mode"])
  got, variables = helpers.run_layer(
      layer, x, case["nonpadding"], mesh_shape=mesh_shape, layout=layout,
      activation_dtype=case["dtype"])
  # The documented group size: the largest divisor of a shard's tokens not
  # above the one asked for (layers.choose_group_size).
  tokens_per_shard = case["batch"] * case["length"] // shards
  group_size = max(d for d in range(1, case["group_size"] + 1)
                   if tokens_per_shard % d == 0)
  assert layers.choose_group_size(
      case["batch"] * case["length"], case["group_size"], shards) == group_size
  # Eq. 3 of the paper, with mesh-tensorflow's floor and a group's ceiling;
  # without capacity (dropless), room for the whole group.
  capacity = min(max(math.ceil(group_size * case["capacity_factor"] /
                               case["num_experts"]), case["min_capacity"]),
                 group_size)
  if case["dispatch_mode"] == "dropless":
    capacity = group_size
  want_y, want = numpy_reference.switch_layer(
      x, k=case["k"], capacity=capacity, group_size=group_size,
      nonpadding=case["nonpadding"].astype(float),
      **helpers.weights_by_role(variables, case["num_experts"]))
  if case["dtype"] == tf.float32:
    np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)
  else:  # the experts compute in bfloat16: 8 bits of mantissa
    np.testing.assert_allclose(got["y"], want_y, rtol=0,
                               atol=2e-2 * max(np.abs(want_y).max(), 1e-3))
  # The router computes in float32 whatever the activations.
  np.testing.assert_allclose(got["switch/aux_loss"], want["aux_loss"],
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(got["switch/dropped_fraction"],
                             want["dropped_fraction"], atol=1e-6)
  if case["dispatch_mode"] == "dropless":
    assert got["switch/dropped_fraction"] == 0.0
  # Padding gets exactly nothing (the residual carries it).
  assert np.all(got["y"][case["nonpadding"] == 0] == 0)
