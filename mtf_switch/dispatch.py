"""Moving tokens to expert slots and back by index instead of one-hot einsums.

The einsum dispatch multiplies `[groups, group_size, d_model]` by a one-hot
`[groups, group_size, experts, capacity]` tensor: about group_size / d_ff
times the experts' own FLOPs, all of them multiplications by zero or one.
Here each slice of the mesh scatters its tokens into the expert buffers
with a segment sum and gathers the expert outputs back, through
`mtf.slicewise`; TensorFlow's gradients of those ops (a gather and a
segment sum) give the backward pass.  The groups and d_model dimensions may
be split over the mesh; group_size, experts_unsplit and capacity are not.

Numerically the same as the einsum path (tests/test_dispatch.py): each slot
holds at most one token, so the segment sum adds nothing to it.
"""
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf


def _slot_ids(assignment_tensors, num_experts, capacity):
  """Flat slot index of each (token, choice) in a slice's expert buffers.

  Args:
    assignment_tensors: list of (expert_index, position, fits) tf.Tensors,
      [groups, group_size] each, one triple per choice.
    num_experts: int.
    capacity: int.

  Returns:
    list of int32 [groups, group_size]: e * groups * capacity + g * capacity
    + position for tokens that fit; num_experts * groups * capacity (one
    past the buffers) for those that do not.
  """
  ids = []
  for expert_index, position, fits in assignment_tensors:
    groups = tf.shape(expert_index)[0]
    group = tf.range(groups)[:, None]
    slot = (expert_index * groups + group) * capacity + position
    ids.append(tf.where(fits > 0, slot,
                        tf.fill(tf.shape(slot), num_experts * groups
                                * capacity)))
  return ids


def _flatten(assignments):
  xs = []
  for a in assignments:
    xs += [a.expert_index, a.position, a.fits]
  return xs


def _triples(tensors):
  return [tuple(tensors[i:i + 3]) for i in range(0, len(tensors), 3)]


def dispatch(x, assignments, experts_dim, capacity_dim):
  """Expert buffers: [experts_unsplit, groups, capacity, d_model].

  Args:
    x: [groups, group_size, d_model].
    assignments: list of routing.Assignment, one per choice.
    experts_dim: the (unsplit) experts dimension of the assignments.
    capacity_dim: mtf.Dimension.

  Returns:
    mtf.Tensor, zero in empty slots.
  """
  groups_dim, _, model_dim = x.shape.dims
  num_experts, capacity = experts_dim.size, capacity_dim.size

  def scatter(x_slice, *assignment_slices):
    groups = tf.shape(x_slice)[0]
    depth = tf.shape(x_slice)[2]
    ids = _slot_ids(_triples(assignment_slices), num_experts, capacity)
    num_slots = num_experts * groups * capacity
    buffers = tf.math.unsorted_segment_sum(
        tf.concat([tf.reshape(x_slice, [-1, depth])] * len(ids), 0),
        tf.concat([tf.reshape(i, [-1]) for i in ids], 0), num_slots + 1)
    return tf.reshape(buffers[:num_slots],
                      [num_experts, groups, capacity, depth])

  return mtf.slicewise(
      scatter, [x] + _flatten(assignments),
      output_shape=[experts_dim, groups_dim, capacity_dim, model_dim],
      output_dtype=x.dtype, splittable_dims=[groups_dim, model_dim],
      name="dispatch_by_index")


def combine(expert_outputs, assignments, group_size_dim):
  """Tokens' outputs: [groups, group_size, d_model], sum of gate x output.

  Args:
    expert_outputs: [experts_unsplit, groups, capacity, d_model].
    assignments: list of routing.Assignment, one per choice.
    group_size_dim: mtf.Dimension.

  Returns:
    mtf.Tensor; zero for tokens with no slot.
  """
  experts_dim, groups_dim, capacity_dim, model_dim = expert_outputs.shape.dims
  num_experts, capacity = experts_dim.size, capacity_dim.size
  gates = [mtf.cast(a.gate, expert_outputs.dtype) for a in assignments]

  def gather(outputs_slice, *slices):
    triples, gate_slices = _triples(slices[:-len(gates)]), slices[-len(gates):]
    depth = tf.shape(outputs_slice)[3]
    flat = tf.reshape(outputs_slice, [-1, depth])
    ids = _slot_ids(triples, num_experts, capacity)
    result = 0
    for slot, gate, (_, _, fits) in zip(ids, gate_slices, triples):
      # Dropped tokens point one past the buffers: read slot 0, weight 0.
      slot = tf.where(fits > 0, slot, tf.zeros_like(slot))
      weight = gate * tf.cast(fits, gate.dtype)
      result += tf.gather(flat, slot) * weight[:, :, None]
    return result

  return mtf.slicewise(
      gather, [expert_outputs] + _flatten(assignments) + gates,
      output_shape=[groups_dim, group_size_dim, model_dim],
      output_dtype=expert_outputs.dtype,
      splittable_dims=[groups_dim, model_dim], name="combine_by_index")
