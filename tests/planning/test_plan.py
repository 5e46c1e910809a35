"""The capacity planner: per-core bytes against hand counts, its advice."""
import glob
import io
import json
import os
import subprocess
import sys

import gin
import helpers  # graph mode, compat shim; refusals
import mesh_tensorflow as mtf
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import routing
from mtf_switch.planning import plan
from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import train

VOCAB = 1000


def _plan(model, batch_size, lengths=(64, 16), mesh_shape="", layout="",
          bindings=(), dtype=tf.float32):
  gin.clear_config()
  gin.parse_config_files_and_bindings(["models/%s.gin" % model],
                                      list(bindings))
  return plan.plan(batch_size, lengths[0], lengths[1], VOCAB, mesh_shape,
                   layout, dtype)


def _adafactor_slot_elements(shape):
  """Adafactor's second-moment slots, by hand: the two largest dimensions
  factored when both are >= 128 (mesh-tensorflow's default), else full."""
  size = 1
  for d in shape:
    size *= d
  largest = sorted(shape, reverse=True)[:2]
  if len(largest) == 2 and largest[1] >= 128:
    return size // largest[0] + size // largest[1]
  return size


def test_parameters_and_slots_equal_a_hand_count():
  p = _plan("switch_tiny", 4, bindings=["d_model = 128"])
  shapes = [full for full, _ in p.size.shard_shapes.values()]
  assert p.param_bytes == p.grad_bytes == 4 * p.size.total_params
  assert p.slot_bytes == 4 * sum(_adafactor_slot_elements(s) for s in shapes)
  # Something is factored at d_model 128 (the embedding), so the two differ.
  assert p.slot_bytes < p.param_bytes


def test_data_parallel_halves_activations_and_keeps_weights():
  one = _plan("dense_tiny", 8)
  two = _plan("dense_tiny", 8, mesh_shape="batch:2", layout="batch:batch")
  assert two.param_bytes == one.param_bytes
  assert two.slot_bytes == one.slot_bytes
  # On one core, what grows with the batch and what does not (the
  # attention's position biases): the split halves only the former.
  per_batch = _plan("dense_tiny", 16).activation_bytes - one.activation_bytes
  fixed = one.activation_bytes - per_batch
  assert fixed > 0
  assert two.activation_bytes == per_batch / 2 + fixed


def test_rematerialization_keeps_one_residual_per_extra_layer():
  batch, d_model = 8, 64
  shallow = _plan("dense_tiny", batch, bindings=["num_layers = 2"])
  deep = _plan("dense_tiny", batch, bindings=["num_layers = 3"])
  # One more encoder layer (64 tokens) and decoder layer (16 tokens), each
  # handing on its [batch, length, d_model] float32 output.
  residuals = 4 * batch * (64 + 16) * d_model
  assert (deep.remat_activation_bytes - shallow.remat_activation_bytes
          == residuals)
  assert (deep.activation_bytes - shallow.activation_bytes
          > 2 * residuals)
  assert deep.remat_activation_bytes < deep.activation_bytes
  assert not deep.recompute_grads


def test_recompute_grads_from_gin_picks_the_rematerialized_total():
  p = _plan("dense_tiny", 8,
            bindings=["transformer.LayerStack.recompute_grads = True"])
  assert p.recompute_grads
  assert plan.total_bytes(p) == (p.param_bytes + p.grad_bytes + p.slot_bytes
                                 + p.remat_activation_bytes)


def test_all_to_all_bytes_are_the_switch_layers_buffers():
  batch = 16
  p = _plan("switch_tiny", batch, mesh_shape="batch:2",
            layout="batch:batch,experts:batch")
  experts, d_model, shards = 4, 64, 2
  expected = 0
  for length in (64, 16):  # one Switch layer in each stack
    tokens = batch * length
    group = layers.choose_group_size(tokens, 64, shards)
    capacity = routing.expert_capacity(group, experts, 1.25)
    # [experts, groups, capacity, d_model] on one core: all experts, its
    # half of the groups; half of it leaves the core, on the way to the
    # experts and back, forward and backward.
    buffer = experts * (tokens // group // shards) * capacity * d_model * 4
    expected += 2 * 2 * buffer / 2
  assert p.all_to_all_bytes == expected
  assert p.expert_buffer_bytes > 0
  assert _plan("switch_tiny", batch).all_to_all_bytes == 0  # one core


def test_bisection_bandwidth_scales_with_the_torus():
  v3, v4 = plan.CHIPS["v3"], plan.CHIPS["v4"]
  assert plan.bisection_bytes_per_s(v3, 1024) == 6.4e12
  assert plan.bisection_bytes_per_s(v3, 256) == pytest.approx(3.2e12)
  assert plan.bisection_bytes_per_s(v4, 512) == pytest.approx(6e12)


def test_report_says_what_to_split_when_it_does_not_fit():
  out = io.StringIO()
  plan.report(_plan("dense_tiny", 8, dtype=tf.bfloat16), "v5e", out)
  assert "fits: " in out.getvalue()
  # 4096 sequences of 512 + 114 tokens on one core: the kept activations
  # (logits over the vocabulary among them) are far beyond 16 GB.
  big = _plan("dense_tiny", 4096, lengths=(512, 114), dtype=tf.bfloat16)
  out = io.StringIO()
  plan.report(big, "v5e", out)
  text = out.getvalue()
  assert "DOES NOT FIT" in text
  assert "recompute_grads = True" in text
  assert big.split_hint == ("batch", None)
  assert "split `batch` over a mesh axis" in text


def test_command_prints_the_plan(capsys):
  gin.clear_config()
  plan.main(["--gin_file", "models/switch_tiny.gin", "--gin_file",
             "layouts/cpu_expert_data_2.gin", "--batch_size", "8",
             "--sequence_length", "inputs:64,targets:16", "--chip", "v5e"])
  out = capsys.readouterr().out
  assert "mesh / layout:  batch:2 / batch:batch,experts:batch" in out
  assert "per core (2 cores, TPU v5e" in out
  assert "all-to-all sent per core and step" in out
  assert "fits: " in out


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="--batch_size 3 .* 2 batch shards"):
    _plan("dense_tiny", 3, mesh_shape="batch:2", layout="batch:batch")
  with pytest.raises(ValueError, match="'inputs:512'"):
    plan.parse_sequence_length("inputs:512")
  assert plan.parse_sequence_length("inputs:512,targets:114") == (512, 114)
  with pytest.raises(SystemExit):
    plan.main(["--gin_file", "models/dense_tiny.gin", "--batch_size", "8",
               "--chip", "v9"])


def test_the_command_refuses_bad_values_in_one_line():
  model = ["--gin_file", "models/switch_tiny.gin"]
  assert helpers.refused("mtf_switch.planning.plan", *model, "--batch_size",
                         "0") == ("argument --batch_size: 0: give a "
                                  "positive integer (1 or more)")
  assert helpers.refused(
      "mtf_switch.planning.plan", *model, "--gin_file",
      "layouts/cpu_expert_data_2.gin", "--batch_size", "3") == (
          "--batch_size 3 does not split over the layout's 2 batch shards "
          "(mesh 'batch:2'); use a multiple of 2")


@pytest.mark.slow
def test_estimate_is_within_a_quarter_of_this_cpus_measured_memory():
  # benchmarks/plan_memory.py trains the main job's model in a process of
  # its own and reports its resident memory's growth over the steps.
  output = subprocess.run(
      [sys.executable,
       os.path.join(helpers.REPO, "benchmarks", "plan_memory.py"),
       "--child", "measure:64"], capture_output=True, text=True, check=True,
      cwd=helpers.REPO).stdout
  measured = json.loads(output.split("RESULT ", 1)[1])["measured_bytes"]
  gin.clear_config()
  gin.parse_config_files_and_bindings(["models/switch_tiny.gin"], [])
  p = plan.plan(64, 64, 16, 32128, activation_dtype=tf.float32)
  assert abs(measured / plan.total_bytes(p) - 1) < 0.25, (
      measured, plan.total_bytes(p))


@pytest.mark.parametrize("mesh_shape,layout,share", [
    ("", "", 1.0),
    ("batch:2", "batch:batch", 0.5),  # a core sees its half of the batch
    # Experts on the batch's axis: every core gathers every token.
    ("batch:2", "batch:batch,experts:batch", 1.0),
])
def test_dropless_dispatch_counts_its_rows_in_the_worst_case(
    mesh_shape, layout, share):
  batch, dropless = 8, ["mtf_switch.SwitchFeedForward.dispatch_mode = "
                        "'dropless'"]
  p = _plan("switch_tiny", batch, mesh_shape=mesh_shape, layout=layout,
            bindings=dropless)
  # Every token a core sees on its experts: top-1, float32 rows in and
  # out [tokens, d_model] and a ReLU's input and output [tokens, d_ff], in
  # the encoder's (64 tokens a sequence) and the decoder's (16) Switch
  # layer.
  d_model, d_ff = 64, 128
  assert p.dropless_row_bytes == sum(
      batch * length * share * (2 * d_model + 2 * d_ff) * 4
      for length in (64, 16))
  assert p.expert_buffer_bytes == 0
  capped = _plan("switch_tiny", batch, mesh_shape=mesh_shape, layout=layout)
  assert capped.dropless_row_bytes == 0 and capped.expert_buffer_bytes > 0
  # The rows are activations the backward pass keeps.
  assert p.activation_bytes - p.dropless_row_bytes > 0
  out = io.StringIO()
  plan.report(p, "v3", out)
  assert "of which dropless rows:" in out.getvalue()
  assert "'dropless' is for CPU and GPU" in out.getvalue()
  out = io.StringIO()
  plan.report(capped, "v3", out)
  assert "dropless" not in out.getvalue()


def _one_einsum_and_one_update(mesh_shape, layout):
  """x[batch 4, d 8] @ w[d, ff 16], then w * 2: by hand, 512 multiply-adds
  and 128 multiplies."""
  mesh_impl = mesh_lib.cpu_mesh_impl(mesh_shape, layout)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch, d, ff = (mtf.Dimension("batch", 4), mtf.Dimension("d_model", 8),
                  mtf.Dimension("d_ff", 16))
  x = mtf.zeros(mesh, [batch, d])
  w = mtf.zeros(mesh, [d, ff])
  first = len(graph.operations)
  mtf.einsum([x, w], output_shape=[batch, ff])
  w * 2.0  # pylint: disable=pointless-statement
  return plan.replicated_work(mesh_impl, graph.operations[first:])


def test_replicated_work_equals_a_hand_count():
  assert _one_einsum_and_one_update("", "") == (1.0, 0.0)
  # Data parallel: the einsum is split, the update of the whole w runs on
  # both cores: (512 + 2 * 128) / 640 done, 128 / 640 repeated.
  ratio, fraction = _one_einsum_and_one_update("batch:2", "batch:batch")
  assert ratio == pytest.approx(768 / 640)
  assert fraction == pytest.approx(128 / 640)
  # d_ff split: both are split, nothing repeated.
  assert _one_einsum_and_one_update("model:2", "d_ff:model") == (1.0, 0.0)
  # An axis nothing is split on: everything runs on both of its cores.
  assert _one_einsum_and_one_update("batch:2,other:2", "batch:batch") == (
      pytest.approx((2 * 512 + 4 * 128) / 640), 1.0)


def _gradient_and_sum_allreduce(mesh_shape, layout, uses=1):
  """dw = x[batch 4, d 8]^T @ g[batch, ff 16] (float32 [d, ff], 512 bytes)
  and the sum of g over batch ([ff], 64 bytes): both sum away batch, then
  something reads them.  With uses=2, dw is the sum of two such einsums
  (a weight used twice, as a shared embedding is)."""
  mesh_impl = mesh_lib.cpu_mesh_impl(mesh_shape, layout)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch, d, ff = (mtf.Dimension("batch", 4), mtf.Dimension("d_model", 8),
                  mtf.Dimension("d_ff", 16))
  x, g = mtf.zeros(mesh, [batch, d]), mtf.zeros(mesh, [batch, ff])
  first = len(graph.operations)
  dw = mtf.add_n([mtf.einsum([x, g], output_shape=[d, ff])
                  for _ in range(uses)])
  total = mtf.reduce_sum(g, output_shape=[ff])
  dw * 2.0, total * 2.0  # pylint: disable=pointless-statement
  return plan.allreduce_bytes(mesh_impl, graph.operations[first:])


def test_allreduce_bytes_equal_a_hand_count():
  assert _gradient_and_sum_allreduce("", "") == 0
  # A ring over n cores sends 2 (n - 1) / n of each summed result.
  assert _gradient_and_sum_allreduce("batch:2", "batch:batch") == 512 + 64
  assert _gradient_and_sum_allreduce("batch:4", "batch:batch") == (
      (512 + 64) * 2 * 3 / 4)
  # Split over d_ff instead, nothing is summed across cores; the batch
  # axis unused: nothing either.
  assert _gradient_and_sum_allreduce("model:2", "d_ff:model") == 0
  # On 2 x 2, batch over one axis and d_ff over the other: rings of 2
  # cores over slices of half the size.
  assert _gradient_and_sum_allreduce(
      "batch:2,model:2", "batch:batch;d_ff:model") == (512 + 64) / 2


def test_partial_sums_added_together_are_all_reduced_once():
  # mesh-tensorflow adds the two partial dw before its one all-reduce.
  assert _gradient_and_sum_allreduce("batch:2", "batch:batch",
                                     uses=2) == 512 + 64


def _main_job_plan(mesh_shape, layout):
  """The main job's model and batch (its defaults) on a mesh."""
  defaults = train.make_parser().parse_args([])
  return _plan("switch_tiny", defaults.batch_size,
               (defaults.input_length, defaults.target_length),
               mesh_shape=mesh_shape, layout=layout)


def test_the_main_job_and_the_cpu_layouts_compute_nothing_twice():
  defaults = train.make_parser().parse_args([])
  shipped = {"main job default": (defaults.mesh_shape, defaults.layout)}
  for path in glob.glob(os.path.join(helpers.REPO, "gin", "layouts",
                                     "cpu_*.gin")):
    gin.clear_config()
    gin.parse_config_file(path)
    shipped[os.path.basename(path)] = (
        gin.query_parameter("utils.run.mesh_shape"),
        gin.query_parameter("utils.run.layout_rules"))
  assert len(shipped) == 4, shipped
  for name, (mesh_shape, layout) in shipped.items():
    p = _main_job_plan(mesh_shape, layout)
    assert p.work_ratio <= plan.REPLICATION_LIMIT, (name, p.work_ratio)


def test_a_layout_that_computes_twice_is_reported():
  # The experts on an axis of their own: attention, the dense layers, the
  # embeddings and the loss run whole on both of its cores.
  p = _main_job_plan("batch:1,experts:2", "batch:batch;experts:experts")
  assert p.work_ratio > 1.5 and p.replicated_fraction > 0.5
  out = io.StringIO()
  plan.report(p, "v3", out)
  assert "computed more than once: %.1f%%" % (
      100 * p.replicated_fraction) in out.getvalue()
  assert "split it there (e.g. experts:batch)" in out.getvalue()


def test_shared_experts_are_counted_as_weights_and_activations():
  """A shared expert (switch_tiny's layers as 1 shared and 15 routed
  experts of 32, top-3) against the same layers without it: its dense FFN
  in the weights, its hidden layer in the activations."""
  batch, d_model, hidden, switch_layers = 8, 64, 32, 2
  segmented = ["num_experts = 15",
               "mtf_switch.SwitchFeedForward.hidden_size = %d" % hidden,
               "mtf_switch.TokensChooseRouter.num_selected_experts = 3"]
  routed = _plan("switch_tiny", batch, bindings=segmented)
  shared = _plan("switch_tiny", batch, bindings=segmented + [
      "mtf_switch.SwitchFeedForward.num_shared_experts = 1"])
  # wi [64, 32] and wo [32, 64] a layer, float32.
  assert shared.param_bytes - routed.param_bytes == (
      switch_layers * 2 * d_model * hidden * 4)
  # At least its [tokens, 32] float32 hidden layer: the encoder's 8 x 64
  # tokens and the decoder's 8 x 16.
  assert shared.activation_bytes - routed.activation_bytes >= (
      (batch * 64 + batch * 16) * hidden * 4)
