"""Dropless dispatch: every token reaches its experts; no expert capacity.

The einsum and index dispatch give each expert a buffer of `capacity` slots
per group (Section 2.2): static shapes, as a TPU needs, and the tokens over
capacity are dropped.  Here, as in MegaBlocks (Gale et al. 2022,
"MegaBlocks: Efficient Sparse Training with Mixture-of-Experts"), each
expert runs its matmuls on exactly the rows routed to it, however many.
Inside an `mtf.slicewise`, a slice sorts the (token, choice) pairs it serves
by expert, splits them into one block of rows per local expert, runs that
expert's FFN on the block (wi, the activation, wo; both branches for GEGLU)
and adds the gate-weighted outputs back into token order with a segment
sum.  TensorFlow's gradients of those ops (gather, split, matmul, segment
sum) are the backward pass.  The row counts change from step to step, so
this is for CPU and GPU: under XLA on a TPU every shape must be static.

Over a mesh (`ffn`), a slice computes the tokens of its groups that go to
its own experts, with its own part of d_ff, and the partial outputs are
summed over the mesh axes of `experts` and `d_ff`: mesh-tensorflow
all-reduces them.  Per layer and core, with T the tokens of the core's
groups and n the cores of the experts' mesh axis, where einsum and index
dispatch send (n-1)/n of their capacity buffers there and back, about
2 x capacity_factor x k x T x d_model (Section 2.2's all-to-all):

- experts on a mesh axis of their own (`experts:expert;batch:batch`): the
  tokens are already on every core of that axis; the output is all-reduced
  over it, 2 (n-1)/n x T x d_model: 1 / (capacity_factor x k) of the
  all-to-alls' bytes;
- experts on the batch's axis (`experts:batch`, T5's default): a core's
  experts may be sent any token of the batch, and no static shape says how
  many, so every core first gathers every group ((n-1) T x d_model) and the
  output of the whole batch is all-reduced (2 (n-1) T x d_model): about n
  times the all-to-alls' bytes;
- d_ff over a model axis: wo's partial sums are all-reduced as the
  layer's output, not as the einsum path's capacity buffers.

The backward pass moves as much again.  The FLOPs are those of the routed
rows, no empty slots and no drops; a core's share follows the routing (no
capacity caps it), as does its memory: at most k rows a token it sees when
every token chooses its experts (see `FFNOperation.worst_case_bytes`).
Each local expert is one matmul op per kernel: many experts with few rows
each cost TensorFlow's per-op overhead.
"""
import collections
import functools
import math

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch import experts


def _gelu(h):
  """GELU's tanh approximation, as mtf.gelu computes it."""
  return h * 0.5 * (1.0 + tf.tanh(math.sqrt(2 / math.pi)
                                  * (h + 0.044715 * h * h * h)))


# The experts' activations in TensorFlow, by their mtf names.
_ACTIVATIONS = {"relu": tf.nn.relu, "gelu": _gelu, "linear": tf.identity}

Rows = collections.namedtuple("Rows", ["token", "gate", "counts"])
Rows.__doc__ = """The (token, choice) pairs one slice serves, by local expert.

Attributes:
  token: int32 [rows], the token's index in the slice's flattened
    [groups * group_size] tokens, sorted by expert.
  gate: [rows], the gate value of that choice, in the same order.
  counts: int32 [local experts], rows per local expert.
"""


def _check_layout(model_dim, mesh_axis):
  """Raises ValueError if the layout splits d_model: a slice's matmuls
  need whole rows."""
  axis, _ = mesh_axis(model_dim)
  if axis is not None:
    raise ValueError(
        "dispatch_mode='dropless' multiplies whole %r rows, which the layout "
        "splits over mesh axis %r; split experts, d_ff and batch only, or "
        "use dispatch_mode='einsum' or 'index'" % (model_dim.name, axis))


def ffn(x, assignments, experts_dim, hidden_dim, activations, variable_dtype,
        mesh_axis, dropout_rate=0.0):
  """Each token's experts' FFN outputs, scaled by the gates and summed.

  Makes the experts' kernels of `experts.dense_product` and
  `experts.dense` (`wi` or `wi_0`, `wi_1`; `wo`): the same variables as the
  einsum and index paths, so checkpoints move between the modes.

  Args:
    x: [groups, group_size, d_model], the activation dtype.
    assignments: list of routing.Assignment, one per choice (`fits` 1 for
      every real token: nothing is dropped without capacity).
    experts_dim: mtf.Dimension `experts` of the kernels, split as the
      layout says.
    hidden_dim: mtf.Dimension `d_ff`.
    activations: list of activation names, one per input kernel (["relu"],
      or GEGLU's ["gelu", "linear"]).
    variable_dtype: mtf.VariableDType.
    mesh_axis: function from an mtf.Dimension to (name of the mesh axis the
      layout splits it over or None, that axis's size).
    dropout_rate: dropout rate in the experts' hidden layer (0: none).

  Returns:
    [groups, group_size, d_model]; zero for padding.

  Raises:
    ValueError: if the layout splits d_model.
  """
  groups_dim, _, model_dim = x.shape.dims
  _check_layout(model_dim, mesh_axis)
  kernels = [experts.kernel(x, model_dim, hidden_dim, experts_dim,
                            variable_dtype, name)
             for name in experts.kernel_names("wi", activations)]
  kernels.append(experts.kernel(x, hidden_dim, model_dim, experts_dim,
                                variable_dtype, "wo"))
  gathered = _gathers_groups(groups_dim, [experts_dim, hidden_dim],
                             mesh_axis)
  if gathered:
    # [groups_unsplit, group_size, d_model]: every core takes every group.
    x, assignments = _unsplit_groups(x, assignments)
  # Mesh dimensions of one slice each, named as the dimensions whose split
  # they follow: a slice's partial output over `experts` and `d_ff`, and
  # its copy of the kernels over the batch's axis.
  token_shards = _shards([experts_dim, hidden_dim], mesh_axis)
  kernel_shards = [] if gathered else _shards([groups_dim], mesh_axis)
  op = FFNOperation(
      x, assignments, kernels, experts_dim, token_shards, kernel_shards,
      activations, dropout_rate,
      splittable_dims=token_shards + kernel_shards + [experts_dim,
                                                      hidden_dim] +
      ([] if gathered else [groups_dim]))
  # [groups, group_size, d_model]: the all-reduce over experts and d_ff.
  y = mtf.reduce_sum(op.outputs[0], output_shape=x.shape)
  if gathered:
    y = mtf.rename_dimension(y, y.shape.dims[0].name, groups_dim.name)
  return y


class FFNOperation(mtf.SlicewiseOperation):
  """The experts of `ffn` on every slice: partial outputs
  [token_shards..., groups, group_size, d_model].

  Its rows live inside TensorFlow, out of mesh-tensorflow's shapes:
  `worst_case_bytes` tells the planner what they may take.
  """

  def __init__(self, x, assignments, kernels, experts_dim, token_shards,
               kernel_shards, activations, dropout_rate, splittable_dims):
    """Gathers the slices' inputs; see `ffn` for the arguments.

    A tensor that the slices differentiate carries all the shard
    dimensions, so that the gradients the slices compute apart are summed
    (broadcast's gradient), not taken from one slice.
    """
    # [token_shards..., groups, group_size, d_model]
    inputs = [_own_copy(x, token_shards),
              mtf.range(x.mesh, experts_dim, tf.int32)]
    inputs += [mtf.broadcast(k, kernel_shards + k.shape.dims)
               for k in kernels]
    for a in assignments:
      # The slots are not differentiable; the gates are.
      gate = mtf.cast(a.gate, x.dtype)
      inputs += [a.expert_index, mtf.stop_gradient(a.fits),
                 mtf.broadcast(gate, token_shards + gate.shape.dims)]
    if dropout_rate > 0:
      # One seed per slice, the same on copies (mtf.random_uniform's seeds
      # follow the slice's place in the tensor), new at every step.
      inputs.append(mtf.random_uniform(
          x.mesh, token_shards + kernel_shards, minval=0,
          maxval=2**31 - 1, dtype=tf.int32))
    self.num_kernels = len(kernels)
    self.num_choices = len(assignments)
    self._activations = activations
    self._dropout_rate = dropout_rate
    super().__init__(self._per_slice, inputs, [inputs[0].shape], [x.dtype],
                     splittable_dims, name="dropless_ffn")

  def _per_slice(self, x, expert_ids, *rest):
    kernels = rest[:self.num_kernels]
    choices = rest[self.num_kernels:][:3 * self.num_choices]
    seed = rest[-1] if self._dropout_rate > 0 else None
    return _slice_ffn(x, expert_ids, kernels,
                      [choices[i:i + 3] for i in range(0, len(choices), 3)],
                      self._activations, self._dropout_rate, seed)

  def worst_case_bytes(self, mesh_impl):
    """Per-core bytes of the rows a slice holds when every token it sees
    chooses its experts (k rows a token): the rows in and out ([rows,
    d_model] twice) and, per input kernel, its matmul and activation, and
    for GEGLU their product ([rows, d_ff] each).

    Args:
      mesh_impl: the layout's mtf.MeshImpl.

    Returns:
      int.
    """
    x, _, kernel_in = self.inputs[:3]
    model_size = x.shape.dims[-1].size
    d_ff = mesh_impl.slice_shape(kernel_in.shape)[-1]
    rows = self.num_choices * mesh_impl.slice_size(x.shape) // model_size
    num_in = self.num_kernels - 1
    per_row = 2 * model_size + (2 * num_in + (num_in > 1)) * d_ff
    return rows * per_row * x.dtype.size


def _gathers_groups(groups_dim, weight_dims, mesh_axis):
  """Whether the groups must be gathered: their mesh axis also splits the
  experts or d_ff, so a slice's kernels serve other slices' tokens."""
  axis, _ = mesh_axis(groups_dim)
  return axis is not None and axis in [mesh_axis(d)[0] for d in weight_dims]


def _unsplit_groups(x, assignments):
  """x and the assignments with `groups` renamed `groups_unsplit`."""
  old = x.shape.dims[0].name

  def unsplit(t):
    return mtf.rename_dimension(t, old, "groups_unsplit")

  return unsplit(x), [a._make(unsplit(t) for t in a) for a in assignments]


def _own_copy(x, shards):
  """x broadcast over `shards`, always as a tensor of its own.

  A slice's gradients are TensorFlow's (tf.gradients of the slice), which
  follow every path from an input to the output: the gates are computed
  from x by the router, so x itself as an input would also collect the
  router's path, which mesh-tensorflow adds again through the gates.
  """
  if not shards:
    return mtf.identity(x)
  return mtf.broadcast(x, shards + x.shape.dims)


def _shards(dims, mesh_axis):
  """One mtf.Dimension per split dimension of `dims`, named as it, with
  one entry per slice of its mesh axis."""
  shards = []
  for dim in dims:
    axis, size = mesh_axis(dim)
    if axis is not None:
      shards.append(mtf.Dimension(dim.name, size))
  return shards


def _slice_ffn(x, expert_ids, kernels, choices, activations, dropout_rate,
               seed):
  """One slice's partial output: its tokens through its local experts.

  Args:
    x: [token_shards (1 each)..., groups, group_size, d_model].
    expert_ids: int32 [local experts], their global indices (contiguous).
    kernels: the local kernels [kernel_shards (1)..., local experts,
      d_model, d_ff] (one per activation), then wo's [..., d_ff, d_model].
    choices: per choice, (expert_index int32, fits, gate [token_shards...,]
      [groups, group_size]).
    activations: list of names, one per input kernel.
    dropout_rate: float, dropout rate in the hidden layer.
    seed: int32 scalar tensor (with leading 1s), or None without dropout.

  Returns:
    a tensor of x's shape.
  """
  depth = x.shape[-1]
  # [groups * group_size, d_model]
  tokens = tf.reshape(x, [-1, depth])
  num_local = expert_ids.shape[0]
  # Per kernel, a list of one [d_in, d_out] per local expert.  Unstacked:
  # the gradient is then one stack of the experts' gradients, where that of
  # each slice k[e] of the [local experts, d_in, d_out] tensor would be a
  # tensor of that whole size, one per expert (128 x 128 MB per kernel at
  # 128 experts, d_model 256 and d_ff 1024).
  kernels = [tf.unstack(tf.reshape(k, k.shape.as_list()[-3:]), num_local)
             for k in kernels]
  rows = _rows(choices, expert_ids[0], num_local)
  # [rows, d_model], sorted by expert: one block per local expert.
  blocks = tf.split(tf.gather(tokens, rows.token), rows.counts,
                    num=num_local)
  outputs = []
  for e, block in enumerate(blocks):
    # [rows of expert e, d_ff]
    hidden = functools.reduce(tf.multiply, [
        _ACTIVATIONS[activation](tf.matmul(block, kernel[e]))
        for kernel, activation in zip(kernels[:-1], activations)])
    if dropout_rate > 0:
      hidden = _dropout(hidden, dropout_rate, seed, e)
    outputs.append(tf.matmul(hidden, kernels[-1][e]))
  # [rows, d_model], each row scaled by its gate (Section 2.1).
  weighted = tf.concat(outputs, 0) * rows.gate[:, None]
  return tf.reshape(
      tf.math.unsorted_segment_sum(weighted, rows.token, tokens.shape[0]),
      tf.shape(x))


def _rows(choices, first_expert, num_local):
  """The (token, choice) pairs whose expert is local, sorted by expert.

  Args:
    choices: see `_slice_ffn`.
    first_expert: int32 scalar, global index of the first local expert.
    num_local: int, local experts.

  Returns:
    Rows.
  """
  tokens, local_experts, gates = [], [], []
  for expert_index, fits, gate in choices:
    local = tf.reshape(expert_index, [-1]) - first_expert
    # Padding has no slot (fits 0); other slices' experts are theirs.
    served = tf.logical_and(tf.reshape(fits, [-1]) > 0,
                            tf.logical_and(local >= 0, local < num_local))
    token = tf.cast(tf.where(served)[:, 0], tf.int32)
    tokens.append(token)
    local_experts.append(tf.gather(local, token))
    gates.append(tf.gather(tf.reshape(gate, [-1]), token))
  local = tf.concat(local_experts, 0)
  order = tf.argsort(local, stable=True)
  return Rows(
      token=tf.gather(tf.concat(tokens, 0), order),
      gate=tf.gather(tf.concat(gates, 0), order),
      counts=tf.math.bincount(local, minlength=num_local,
                              maxlength=num_local, dtype=tf.int32))


def _dropout(hidden, rate, seed, expert):
  """Dropout of one expert's hidden rows, drawn from the slice's seed."""
  keep = tf.random.stateless_uniform(
      tf.shape(hidden), seed=tf.stack([tf.reshape(seed, []), expert])) >= rate
  return hidden * tf.cast(keep, hidden.dtype) / tf.cast(1.0 - rate,
                                                        hidden.dtype)
