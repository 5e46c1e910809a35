r"""Plans a training run on a TPU slice: memory per core, all-to-all, step time.

  python -m mtf_switch.planning.plan --gin_file models/switch_c.gin \
      --gin_file layouts/expert_data_2048.gin --batch_size 2048 \
      --sequence_length inputs:512,targets:114 --chip v3

Builds the gin model's training step as a mesh-tensorflow graph (forward,
gradients and mesh-tensorflow's own Adafactor; variables are declared, never
initialized, so nothing of the weights' size is allocated) and reads every
tensor's per-core shape under the layout (`mesh_impl.slice_shape`, the
shapes the lowered graph would have).  From those it adds up, per core:

- parameters and their gradients (float32, the slice dtype training needs),
- Adafactor's slots (the factored second moments mesh-tensorflow makes),
- the activations one step keeps for the backward pass: every forward
  tensor, or, with mesh-tensorflow's per-layer rematerialization
  (`transformer.LayerStack.recompute_grads = True`), the tensors outside the
  layers, the ones passed between layers and one layer's worth recomputed,
- of those, the Switch layers' expert buffers `[experts, groups, capacity,
  d_model]`, or, with dropless dispatch (no buffers; CPU and GPU only, a
  TPU needs static shapes), the rows its experts may be sent: the worst
  case, every token a core sees routed to that core's experts,

how much of the step's work the layout repeats on several cores (an
operation none of whose tensors is split over a mesh axis runs whole on
every core of it), and the bytes each core sends in all-to-alls (reshapes
that move a split from one tensor dimension to another, e.g. from groups to
experts: forward and backward, and the recomputed forward).  The step time
is a lower bound: the FLOPs of `mtf_switch.planning.model_size` (x3 for
forward and backward, x4 with rematerialization) at the chip's peak rate,
plus the all-to-alls at the slice's bisection bandwidth, without overlap.
"""
import collections
import re
import sys

from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import gin
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

import mtf_switch  # noqa: F401  (gin search path, configurables)
from mtf_switch import cli
from mtf_switch import dropless
from mtf_switch import models
from mtf_switch.planning import model_size
from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import step

GIB = 2.0**30

Chip = collections.namedtuple("Chip", [
    "cores_per_chip", "peak_flops_per_chip", "hbm_bytes_per_chip",
    "pod_chips", "pod_bisection_bytes_per_s", "torus_rank"])
Chip.__doc__ = """Published figures of a TPU generation.

A mesh device is a core: v3 chips have two (the paper's "cores"); v4 chips
run their two TensorCores as one device (megacore); v5e chips have one.
The bisection bandwidth of a slice of n chips is the pod's scaled by
(n / pod_chips) ** ((rank - 1) / rank) for a torus of that rank.
"""

# cloud.google.com/tpu/docs/v3, /v4, /v5e ("Peak compute per chip", "HBM2
# capacity", "TPU Pod size", "Interconnect topology", "Bisection bandwidth
# per Pod").
CHIPS = {
    "v3": Chip(2, 123e12, 32 * GIB, 1024, 6.4e12, 2),
    "v4": Chip(1, 275e12, 32 * GIB, 4096, 24e12, 3),
    "v5e": Chip(1, 197e12, 16e9, 256, 1.6e12, 2),
}

Plan = collections.namedtuple("Plan", [
    "cores", "param_bytes", "grad_bytes", "slot_bytes", "activation_bytes",
    "remat_activation_bytes", "recompute_grads", "expert_buffer_bytes",
    "all_to_all_bytes", "flops_per_core", "size", "split_hint",
    "dropless_row_bytes", "work_ratio", "replicated_fraction",
    "allreduce_bytes"])
Plan.__doc__ = """What `plan` finds; bytes and FLOPs are per core and step.

Attributes:
  cores: devices of the mesh.
  param_bytes, grad_bytes, slot_bytes: float32 weights, their gradients,
    Adafactor's slots.
  activation_bytes: forward tensors kept for the backward pass, without
    rematerialization.
  remat_activation_bytes: the same with per-layer rematerialization.
  recompute_grads: whether the gin model rematerializes (which of the two
    `total_bytes` counts).
  expert_buffer_bytes: the Switch layers' [experts, groups, capacity,
    d_model] tensors (part of the activations).
  all_to_all_bytes: bytes one core sends in all-to-alls.
  flops_per_core: training FLOPs (Table 9's convention, see model_size).
  size: the model's ModelSize.
  split_hint: (dimension name, mesh axis or None): the tensor dimension
    whose split would cut the largest memory term most (see `split_hint`).
  dropless_row_bytes: the rows of the dropless Switch layers in the worst
    case (part of the activations; 0 without dropless dispatch).
  work_ratio: the work all cores do together over the work of the step
    done once (1.0: nothing computed twice; see `replicated_work`).
  replicated_fraction: the share of the step's work done on more than one
    core.
  allreduce_bytes: bytes one core sends in all-reduces (the gradients of
    weights a data-parallel layout holds whole, sums over split
    dimensions); see `allreduce_bytes`.
"""


def total_bytes(p):
  """Memory one core needs for a step of plan `p`."""
  activations = (p.remat_activation_bytes if p.recompute_grads
                 else p.activation_bytes)
  return p.param_bytes + p.grad_bytes + p.slot_bytes + activations


def _bytes(mesh_impl, tensor):
  return mesh_impl.slice_size(tensor.shape) * tensor.dtype.size


def _variable_bytes(mesh_impl, variable):
  # Its output is in the activation dtype; the slices in memory are not.
  return mesh_impl.slice_size(variable.shape) * variable.slice_dtype.size


def build_training_graph(batch_size, input_length, target_length, vocab_size,
                         mesh_impl, activation_dtype):
  """The gin model's training step as an (unlowered) mtf graph.

  Returns:
    (model, forward operations, the forward tensors the backward pass
    reads, trainable variables, optimizer slot variables, every operation
    of the step: forward, backward and the optimizer's update).
  """
  model = models.make_bitransformer(vocab_size, mesh_impl.shape,
                                    mesh_impl.layout_rules)
  with tf.Graph().as_default():
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    batch_dim = mtf.Dimension("batch", batch_size)

    def tokens(length):
      return mtf.zeros(mesh, [batch_dim, mtf.Dimension("length", length)],
                       tf.int32)

    _, loss = model.call_simple(
        inputs=tokens(input_length), targets=tokens(target_length),
        compute_loss=True, mode=tf.estimator.ModeKeys.TRAIN,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32,
                                         activation_dtype))
    forward = list(graph.operations)
    variables, grads = step.gradients(loss)
    backward = graph.operations[len(forward):]
    num_variables = len(graph.all_variables)
    mtf.optimize.AdafactorOptimizer().apply_grads(grads, variables)
    slots = graph.all_variables[num_variables:]
  produced = set(t for op in forward if not isinstance(op, mtf.Variable)
                 for t in op.outputs)
  saved = set(t for op in backward for t in op.inputs if t in produced)
  return model, forward, saved, variables, slots, list(graph.operations)


_BLOCK = re.compile(r"^((?:encoder|decoder)/block_\d+)/")


def _block(op):
  match = _BLOCK.match(op.name)
  return match.group(1) if match else None


def activation_bytes(mesh_impl, forward, saved):
  """Per-core bytes the backward pass keeps, without and with per-layer
  rematerialization.

  Without it, every forward tensor the backward pass reads is kept.  With
  it (mtf.recompute_grad around each layer of a LayerStack), a layer keeps
  only what it hands on to later layers; its own tensors are made again,
  one layer at a time, in the backward pass.

  Args:
    mesh_impl: the layout's mtf.MeshImpl.
    forward: the forward operations.
    saved: the forward tensors the backward pass reads.

  Returns:
    (bytes without rematerialization, bytes with it).
  """
  everything = outside = 0
  inner = collections.Counter()
  handed_on = set()
  for op in forward:
    block = _block(op)
    handed_on.update(t for t in op.inputs
                     if _block(t.operation) not in (None, block))
    sizes = [_bytes(mesh_impl, t) for t in op.outputs if t in saved]
    if isinstance(op, dropless.FFNOperation):
      # Its rows are TensorFlow's, out of mesh-tensorflow's shapes.
      sizes.append(op.worst_case_bytes(mesh_impl))
    for size in sizes:
      everything += size
      if block is None:
        outside += size
      else:
        inner[block] += size
  passed = sum(_bytes(mesh_impl, t) for t in handed_on)
  return everything, outside + passed + max(inner.values(), default=0)


def expert_buffer_bytes(mesh_impl, saved):
  """Per-core bytes of the Switch layers' [experts, groups, capacity,
  d_model] tensors among `saved` (either of the first two may be its
  unsplit twin)."""
  total = 0
  for t in saved:
    names = t.shape.dimension_names
    if ("capacity" in names and "d_model" in names
        and any(n.startswith("experts") for n in names)):
      total += _bytes(mesh_impl, t)
  return total


def dropless_row_bytes(mesh_impl, forward):
  """Per-core bytes of the dropless Switch layers' rows in the worst case
  (`dropless.FFNOperation.worst_case_bytes`)."""
  return sum(op.worst_case_bytes(mesh_impl) for op in forward
             if isinstance(op, dropless.FFNOperation))


def all_to_all_bytes(mesh_impl, forward):
  """Per-core bytes sent by the forward pass's all-to-alls.

  A reshape whose output splits a mesh axis over another tensor dimension
  than its input is an all-to-all over that axis: each core keeps 1/n of
  its slice and sends the rest.
  """
  sent = 0.0
  for op in forward:
    if not isinstance(op, mtf.ReshapeOperation):
      continue
    n = _cores_along(mesh_impl,
                     {axis for _, axis in _moved_splits(mesh_impl, op)})
    if n > 1:
      sent += _bytes(mesh_impl, op.outputs[0]) * (n - 1) / n
  return sent


def allreduce_bytes(mesh_impl, operations):
  """Per-core bytes sent by the step's all-reduces.

  An einsum or a reduction that sums away a dimension split over mesh axes
  leaves each core a partial sum, which mesh-tensorflow all-reduces over
  those axes (the gradient of a weight held whole on each data-parallel
  core is one).  It does so lazily (`LazyAllreduceSum`): partial sums
  added together, or reshaped, stay partial, and the sum is all-reduced
  once, where something else reads it (so a shared embedding's gradients
  from its three uses are all-reduced once).  A ring all-reduce over n
  cores sends 2 (n - 1) / n of the result from each core.

  Args:
    mesh_impl: the layout's mtf.MeshImpl.
    operations: the step's mtf operations, in graph order.

  Returns:
    float, bytes.
  """
  pending = {}  # partial sums not yet all-reduced: tensor -> mesh axes
  sent = 0.0

  def reduce(tensor, axes):
    return _bytes(mesh_impl, tensor) * 2 * (
        _cores_along(mesh_impl, axes) - 1) / _cores_along(mesh_impl, axes)

  for op in operations:
    ins = [pending.get(t) for t in op.inputs]
    # mesh-tensorflow's slicewise_delay_allreduce: same-shape additions
    # of partial sums over the same axes, and reshapes of one.
    if (ins and all(ins) and len(set(ins)) == 1
        and _keeps_partial_sums(mesh_impl, op)):
      pending[op.outputs[0]] = ins[0]
      continue
    for t in op.inputs:
      if t in pending:
        sent += reduce(t, pending.pop(t))
    axes = _summed_axes(mesh_impl, op)
    if axes and getattr(op, "_reduction_fn_string", "SUM") == "SUM":
      pending[op.outputs[0]] = axes
    elif axes:
      sent += reduce(op.outputs[0], axes)
  return sent


def _keeps_partial_sums(mesh_impl, op):
  """Whether an op of partial sums leaves them partial (mtf lowers it
  slicewise on them, `slicewise_delay_allreduce`)."""
  if isinstance(op, mtf.AddOperation):
    return all(t.shape == op.outputs[0].shape for t in op.inputs)
  if isinstance(op, mtf.ReshapeOperation):
    return not _moved_splits(mesh_impl, op)
  return False


def _summed_axes(mesh_impl, op):
  """The mesh axes an einsum or reduction sums over (those of its inputs'
  split dimensions that its output lacks), as a frozenset."""
  if not isinstance(op, (mtf.EinsumOperation, mtf.ReduceOperation)):
    return frozenset()
  kept = set(op.outputs[0].shape.dimension_names)
  return frozenset(axis for t in op.inputs
                   for name, axis in _splits(mesh_impl, t)
                   if name not in kept)


def _cores_along(mesh_impl, axes):
  """How many cores the mesh axes (indices) span together."""
  n = 1
  for axis in axes:
    n *= mesh_impl.shape.dims[axis].size
  return n


def _splits(mesh_impl, tensor):
  """{(dimension name, mesh axis)} of the tensor's split dimensions."""
  axes = mesh_impl.tensor_layout(tensor).tensor_axis_to_mesh_axis
  return {(dim.name, axis) for dim, axis in zip(tensor.shape.dims, axes)
          if axis is not None}


def _moved_splits(mesh_impl, op):
  """The splits a reshape moves to another dimension (an all-to-all)."""
  return (_splits(mesh_impl, op.inputs[0]) ^
          _splits(mesh_impl, op.outputs[0]))


def _work(op):
  """An operation's work in element operations: an einsum's multiply-adds
  (the product of every dimension it names), otherwise its largest
  tensor's size (one operation an element)."""
  tensors = list(op.inputs) + list(op.outputs)
  if isinstance(op, mtf.EinsumOperation):
    dims = {d.name: d for t in tensors for d in t.shape.dims}
    return mtf.Shape(list(dims.values())).size
  return max(t.shape.size for t in tensors)


def _copies(mesh_impl, op):
  """On how many cores the operation's work is repeated: the mesh's size
  over the cores its tensors' splits tell apart."""
  axes = {axis for t in list(op.inputs) + list(op.outputs)
          for _, axis in _splits(mesh_impl, t)}
  return mesh_impl.shape.size // _cores_along(mesh_impl, axes)


# Above this, a layout repeats work it could split.  Below it are the repeats
# every data- or model-parallel layout has: each data-parallel core updates
# the weights it holds whole (1% of the main job's step on `batch:2`), and
# model-parallel cores each compute what has no split dimension of theirs,
# the Switch layer's one-hot dispatch and the layer norms (5% on
# gin/layouts/cpu_expert_model_data_2x2.gin).
REPLICATION_LIMIT = 1.10


def replicated_work(mesh_impl, operations):
  """How much of a step the layout computes more than once.

  mesh-tensorflow gives every core a slice of each tensor; a tensor
  dimension that no mesh axis splits is whole on every core of that axis.
  An operation none of whose tensors is split over an axis therefore runs,
  whole, on each core along it: e.g. on the mesh `batch:1,experts:2` with
  `experts:experts`, attention and the dense layers run on both cores.
  Data parallelism's own repeats (each core updating the weights it holds
  whole) count too.

  Args:
    mesh_impl: the layout's mtf.MeshImpl.
    operations: the step's mtf operations.

  Returns:
    (work of all cores / work of the step once, share of the step's work
    done on more than one core).
  """
  once = done = repeated = 0
  for op in operations:
    if isinstance(op, mtf.Variable) or not (op.inputs or op.outputs):
      continue
    work, copies = _work(op), _copies(mesh_impl, op)
    once += work
    done += work * copies
    if copies > 1:
      repeated += work
  if not once:
    return 1.0, 0.0
  return done / once, repeated / once


# The dimensions a layout of mesh-tensorflow's transformer may split; the
# others (length, d_kv, the Switch layer's groups and capacity) are not
# meant to be split by layout rules.
SPLITTABLE = ("batch", "experts", "d_ff", "heads", "vocab", "d_model")


def split_hint(mesh_impl, tensors):
  """The dimension whose split would shrink these tensors the most.

  Sums the per-core bytes of `tensors` under each of their SPLITTABLE
  dimensions (longer than 1 on this core); the one with the largest sum is
  the one to split, or to split further.

  Args:
    mesh_impl: the layout's mtf.MeshImpl.
    tensors: mtf tensors of the largest memory term.

  Returns:
    (dimension name, the mesh axis it is split over or None).
  """
  weight = collections.Counter()
  axis_of = {}
  for t in tensors:
    size = _bytes(mesh_impl, t)
    layout = mesh_impl.tensor_layout(t).tensor_axis_to_mesh_axis
    for dim, per_core, axis in zip(t.shape.dims, mesh_impl.slice_shape(t.shape),
                                   layout):
      if per_core > 1 and dim.name in SPLITTABLE:
        weight[dim.name] += size
        axis_of[dim.name] = (None if axis is None
                             else mesh_impl.shape.dims[axis].name)
  if not weight:
    return None
  name = weight.most_common(1)[0][0]
  return name, axis_of[name]


def plan(batch_size, input_length, target_length, vocab_size=32128,
         mesh_shape="", layout="", activation_dtype=tf.bfloat16):
  """Plans a training step of the gin-configured model (gin parsed).

  Args:
    batch_size: sequences per step (all cores).
    input_length: encoder tokens per sequence.
    target_length: decoder tokens per sequence.
    vocab_size: vocabulary size.
    mesh_shape: mesh shape string ("" for one core).
    layout: layout rules string.
    activation_dtype: tf.bfloat16 (T5 on TPU) or tf.float32.

  Returns:
    Plan.

  Raises:
    ValueError: if the batch does not split over the layout's batch axis.
  """
  mesh_impl = mesh_lib.cpu_mesh_impl(mesh_shape, layout)
  batch_axis = mesh_impl.tensor_dimension_to_mesh_axis(
      mtf.Dimension("batch", batch_size))
  if batch_axis is not None:
    shards = mesh_impl.shape.dims[batch_axis].size
    if batch_size % shards:
      raise ValueError(
          "--batch_size %d does not split over the layout's %d batch shards "
          "(mesh %r); use a multiple of %d" % (batch_size, shards, mesh_shape,
                                               shards))
  model, forward, saved, variables, slots, operations = build_training_graph(
      batch_size, input_length, target_length, vocab_size, mesh_impl,
      activation_dtype)
  size = model_size.measure(variables, model, mesh_impl, input_length,
                            target_length)
  param_bytes = sum(_variable_bytes(mesh_impl, v) for v in variables)
  slot_bytes = sum(_variable_bytes(mesh_impl, v) for v in slots)
  everything, remat = activation_bytes(mesh_impl, forward, saved)
  recompute = any(stack._recompute_grads  # pylint: disable=protected-access
                  for stack in (model.encoder.layer_stack,
                                model.decoder.layer_stack))
  sent_forward = all_to_all_bytes(mesh_impl, forward)
  # The backward pass sends the gradients back the way the forward came;
  # rematerialization runs the forward once more.
  passes = 3 if recompute else 2
  cores = mesh_impl.shape.size
  flops = (4 if recompute else 3) * batch_size * size.flops_per_seq / cores
  activations = remat if recompute else everything
  if activations > 2 * param_bytes + slot_bytes:
    hint = split_hint(mesh_impl, saved)
  else:
    hint = split_hint(mesh_impl, [v.outputs[0] for v in variables + slots])
  return Plan(cores, param_bytes, param_bytes, slot_bytes, everything, remat,
              recompute, expert_buffer_bytes(mesh_impl, saved),
              passes * sent_forward, flops, size, hint,
              dropless_row_bytes(mesh_impl, forward),
              *replicated_work(mesh_impl, operations),
              allreduce_bytes(mesh_impl, operations))


def bisection_bytes_per_s(chip, num_chips):
  """Bisection bandwidth of a slice of `num_chips` (see `Chip`)."""
  fraction = min(1.0, num_chips / chip.pod_chips)
  return chip.pod_bisection_bytes_per_s * fraction ** (
      (chip.torus_rank - 1) / chip.torus_rank)


def step_seconds(p, chip):
  """(compute, all-to-all) seconds of a step: a lower bound.

  Compute at the chip's peak FLOP/s; an all-to-all sends half of all bytes
  across the slice's bisection (uniformly spread destinations).
  """
  compute = p.flops_per_core / (chip.peak_flops_per_chip /
                                chip.cores_per_chip)
  num_chips = max(1, p.cores // chip.cores_per_chip)
  communication = (p.all_to_all_bytes * p.cores / 2 /
                   bisection_bytes_per_s(chip, num_chips))
  return compute, communication


def parse_sequence_length(text):
  """'inputs:512,targets:114' (T5's feature lengths) -> (512, 114)."""
  try:
    lengths = dict((k.strip(), int(v)) for k, v in
                   (item.split(":") for item in text.split(",")))
  except ValueError:
    lengths = {}
  if set(lengths) != {"inputs", "targets"} or min(lengths.values()) < 1:
    raise ValueError("--sequence_length %r: expected inputs:N,targets:M with "
                     "positive N and M, e.g. inputs:512,targets:114" % text)
  return lengths["inputs"], lengths["targets"]


def report(p, chip_name, out=None):
  """Prints plan `p` for a chip (to `out`, default stdout): memory,
  all-to-all, step time, the fit."""
  out = out or sys.stdout
  chip = CHIPS[chip_name]
  hbm = chip.hbm_bytes_per_chip / chip.cores_per_chip
  gib = lambda b: "%.2f GiB" % (b / GIB)  # noqa: E731
  lines = [
      "per core (%d cores, TPU %s: %s HBM, %.4g TFLOP/s bf16 each)" % (
          p.cores, chip_name, gib(hbm),
          chip.peak_flops_per_chip / chip.cores_per_chip / 1e12),
      "  parameters (float32):      %s" % gib(p.param_bytes),
      "  gradients (float32):       %s" % gib(p.grad_bytes),
      "  Adafactor slots:           %s" % gib(p.slot_bytes),
      "  activations:               %s without rematerialization, %s with "
      "recompute_grads%s" % (gib(p.activation_bytes),
                             gib(p.remat_activation_bytes),
                             " (used)" if p.recompute_grads else ""),
      "    of which expert buffers: %s" % gib(p.expert_buffer_bytes),
  ]
  if p.dropless_row_bytes:
    lines.append("    of which dropless rows:  %s (worst case: every token "
                 "to one core's experts)" % gib(p.dropless_row_bytes))
  lines += [
      "  total:                     %s" % gib(total_bytes(p)),
      "all-to-all sent per core and step: %s" % gib(p.all_to_all_bytes),
      "all-reduce sent per core and step: %s" % gib(p.allreduce_bytes),
      "computed more than once: %.1f%% of the step's work (all cores do "
      "%.2fx the work of one copy)%s" % (
          100 * p.replicated_fraction, p.work_ratio,
          "" if p.work_ratio <= REPLICATION_LIMIT else
          ": the layout leaves a dimension of the step's largest tensors "
          "unsplit on a mesh axis; split it there (e.g. experts:batch) or "
          "use fewer cores"),
  ]
  compute, communication = step_seconds(p, chip)
  lines.append("step time >= %.3f s (compute %.3f s at peak, all-to-all "
               "%.3f s at bisection bandwidth)" % (
                   compute + communication, compute, communication))
  if p.dropless_row_bytes:
    lines.append(
        "dispatch_mode 'dropless' is for CPU and GPU: a TPU needs static "
        "shapes ('einsum' or 'index'); its all-gathers and all-reduces are "
        "not counted above")
  if total_bytes(p) <= hbm:
    lines.append("fits: %s of %s" % (gib(total_bytes(p)), gib(hbm)))
  else:
    lines.append("DOES NOT FIT: %s needed, %s per core" % (
        gib(total_bytes(p)), gib(hbm)))
    lines.append(_advice(p))
  out.write("\n".join(lines) + "\n")


def _advice(p):
  """Which dimension to split (or what else to change) to make p fit."""
  advice = []
  if not p.recompute_grads and p.remat_activation_bytes < p.activation_bytes:
    advice.append("rematerialize (transformer.LayerStack.recompute_grads = "
                  "True): %.2f GiB fewer activations"
                  % ((p.activation_bytes - p.remat_activation_bytes) / GIB))
  if p.split_hint:
    name, axis = p.split_hint
    if axis is None:
      advice.append("split `%s` over a mesh axis (a layout rule %s:<axis>): "
                    "it holds most of the largest term" % (name, name))
    else:
      advice.append("`%s`, split over mesh axis `%s`, holds most of the "
                    "largest term: a larger `%s` axis (more cores)%s"
                    % (name, axis, axis,
                       ", or a smaller batch" if name == "batch" else ""))
  return "to fit: " + "; ".join(advice)


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  cli.add_flags(parser)  # a model gin file, then a layout
  parser.add_argument("--batch_size", type=cli.positive_int, required=True,
                      help="sequences per step, all cores together")
  parser.add_argument("--sequence_length", default="inputs:512,targets:114",
                      help="T5's feature lengths (default: C4 span "
                           "corruption's)")
  parser.add_argument("--chip", default="v3", choices=sorted(CHIPS))
  parser.add_argument("--vocab_size", type=cli.positive_int, default=32128)
  parser.add_argument("--activation_dtype", default="bfloat16",
                      choices=["bfloat16", "float32"])
  args = parser.parse_args(argv)
  # Planning builds a graph and trains nothing: all its errors are the
  # gin model's, the layout's or the flags' (each named).
  with cli.refusals(parser):
    input_length, target_length = parse_sequence_length(args.sequence_length)
    gin_files = cli.parse(args)
    mesh_shape, layout = model_size.layout_from_gin()
    p = plan(args.batch_size, input_length, target_length, args.vocab_size,
             mesh_shape, layout, tf.as_dtype(args.activation_dtype))
  print("model:          %s" % " + ".join(gin_files))
  print("mesh / layout:  %s / %s" % (mesh_shape or "1 core", layout or "-"))
  print("batch:          %d x (inputs %d, targets %d)" % (
      args.batch_size, input_length, target_length))
  report(p, args.chip)


if __name__ == "__main__":
  tf.disable_eager_execution()
  sys.exit(main())
