"""benchmarks/profile_step.py: which part of the step each lowered op is
counted in."""
import collections

import gin
import pytest

import helpers
from mtf_switch import models
from mtf_switch.training import step as step_lib


@pytest.fixture(scope="module")
def switch_step():
  """The tiny Switch model's lowered training step (2 Switch layers of 4
  experts) and the benchmark's reading of it."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  graph = step_lib.build_step_graph(models.make_bitransformer(32), 4, 8, 8)
  gin.clear_config()
  benchmark = helpers.benchmark("profile_step")
  return graph.graph, benchmark, benchmark.expert_matmuls(graph.graph)


def test_the_expert_matmuls_are_the_einsums_with_an_expert_weight(
    switch_step):
  tf_graph, _, matmuls = switch_step
  # wi and wo of each of the 2 Switch layers.
  assert len(matmuls) == 4
  for prefix in matmuls:
    einsum = tf_graph.get_operation_by_name(
        prefix + "/parallel_0/einsum/Einsum")
    weights = [i for i in einsum.inputs if i.op.type == "ReadVariableOp"]
    # [experts, d_model, d_ff] or [experts, d_ff, d_model]: 4 experts.
    assert [w.shape.as_list()[0] for w in weights] == [4]


def test_every_op_of_a_switch_layer_is_counted_in_the_layers_parts(
    switch_step):
  tf_graph, benchmark, matmuls = switch_step
  parts = collections.defaultdict(set)
  for op in tf_graph.get_operations():
    part, phase = benchmark.category(op.name, matmuls)
    in_switch = "SwitchFeedForward/" in op.name
    if part.startswith("optimizer"):
      continue
    assert (part in ("routing", "dispatch", "experts")) == in_switch, (
        op.name, part)
    if part != "rest":
      assert phase == ("backward" if "gradients" in op.name
                       else "forward"), op.name
    parts[part].add(op.type)
  assert "Einsum" in parts["experts"] and "Cumsum" in parts["routing"]
  assert {"routing", "dispatch", "experts", "other layers"} <= set(parts)


def test_adafactor_updates_of_expert_weights_are_told_apart(switch_step):
  tf_graph, benchmark, matmuls = switch_step
  names = [op.name for op in tf_graph.get_operations()
           if "adafactor" in op.name]
  expert = {benchmark.category(n, matmuls)[0] == "optimizer: expert weights"
            for n in names}
  assert expert == {True, False}
  # A Switch layer's router weights are not expert weights.
  assert all(benchmark.category(n, matmuls)[0] == "optimizer: other weights"
             for n in names if "/router/" in n)
