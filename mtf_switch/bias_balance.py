"""Load balance by a per-expert bias, without an auxiliary loss.

Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for
Mixture-of-Experts" (used by DeepSeek-V3): each expert has a bias that is
added to the router's scores when the experts are *chosen*, never to the
gates, and after every training step moves by a fixed rate towards balance:

  b_i <- b_i + rate * sign(mean_j load_j - load_i)

where load_i counts the (real) tokens that chose expert i in the step's
whole batch.  The bias gets no gradient: it changes only by this rule.

Mesh-TensorFlow builds a step's updates from the optimizer alone (T5's
binary groups the optimizer's assignments and the global step's increment
into its train op), so the bias's assignment rides the backward pass:
`assign_on_backward` wraps the router's logits in an identity whose
gradient first assigns the new bias.  The assignment thus runs in every
step that trains the router or anything below it, after the step's own
routing has read the bias (the new bias is computed from that routing),
and never in evaluation or decoding, which compute no gradient.  It needs
a mesh that supports control dependencies (mesh-tensorflow's placement
meshes: CPU and GPU).
"""
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf


def check_rate(rate):
  if not (isinstance(rate, (int, float)) and not isinstance(rate, bool)
          and rate > 0):
    raise ValueError("bias_update_rate must be a number > 0 (Wang et al. "
                     "2024 and DeepSeek-V3 use 1e-3), got %r" % (rate,))


def expert_bias(experts_dim, mesh):
  """The layer's [experts] float32 bias, a non-trainable variable (kept in
  checkpoints), zero at the start."""
  return mtf.get_variable(mesh, "expert_bias", [experts_dim],
                          initializer=tf.zeros_initializer(),
                          dtype=tf.float32, trainable=False)


def expert_load(assignments, nonpadding, experts_dim):
  """[experts] float32: the real tokens that chose each expert, over every
  choice and the whole batch (summed across the mesh), before capacity."""
  load = 0.0
  for a in assignments:
    load += mtf.reduce_sum(
        mtf.one_hot(a.expert_index, experts_dim, dtype=tf.float32)
        * nonpadding, output_shape=[experts_dim])
  return load


def updated_bias(bias, load, rate):
  """The bias after a step: rate x sign(mean load - load), per expert."""
  return bias + rate * mtf.sign(mtf.reduce_mean(load) - load)


class AssignOnBackward(mtf.Operation):
  """The identity, whose gradient first makes an assignment (see the
  module docstring).  The assignment is set after the op is made
  (`assign_later`), since its value depends on the op's own output."""

  def __init__(self, x, name="assign_on_backward"):
    super().__init__([x], x.mesh, name=name)
    self._outputs = [mtf.Tensor(self, x.shape, x.dtype)]
    self._assignment = None

  def assign_later(self, variable, value):
    self._assignment = variable, value

  def lower(self, lowering):
    lowering.set_tensor_lowering(self.outputs[0],
                                 lowering.tensors[self.inputs[0]])

  def gradient(self, grad_ys):
    dy, = grad_ys
    if self._assignment is None:
      return [dy]
    return [mtf.depend(dy, [mtf.assign(*self._assignment)])]
