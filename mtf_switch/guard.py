"""A training step that fails at the first non-finite loss, router logit or
gradient, before its update (T5's binary).

The main job and the studies watch the loss and the routing metrics after
each step (`loop.StopOnNonFinite`).  T5's binary trains inside an
Estimator, where nothing of ours runs between steps, so there the check is
in the graph: `checked(x, what)` passes x on unchanged and fails the step
(tf.errors.InvalidArgumentError) when x holds a NaN or an infinity, naming
`what` (with the layer) and the global step.  The Estimator then stops with
that error and a non-zero exit status.

Checking the forward pass alone is not enough: an update can leave
non-finite weights behind a finite loss, and the checkpoint of that step
is written before the next forward pass fails (seen with a learning rate
of 1e4: NaN weights in the checkpoint of step 2, the loss non-finite at
step 3).  `CheckedAdafactorOptimizer` therefore checks every gradient
before its update is applied; the checkpoint hook saves only after a step
that succeeded, so the last checkpoint holds the weights and slots of the
last good step.

The mtf_switch drop-in for T5's binary turns both on
(`mtf_switch.checked.enabled = True` and `utils.run.optimizer =
@mtf_switch.CheckedAdafactorOptimizer`); elsewhere the forward checks are
off and build nothing.

Instead of stopping, a run can skip such a step, as large-scale trainers
do: `SkipNonFiniteAdafactorOptimizer` applies no update (weights and
optimizer slots keep their values) when the gradients are not all finite,
and exports `nonfinite_step_skipped` (1 on a skipped step) as a scalar
summary.  The step still counts and its batch is spent.  Opt-in: the main
job's `--skip_nonfinite_steps N`, which also stops the run after more than
N skipped steps in a row (`loop.StopOnNonFinite`), and
`gin/skip_nonfinite.gin` for T5's binary.
"""
import sys

import gin
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf


@gin.configurable(module="mtf_switch", denylist=["x", "what", "squared"])
def checked(x, what, squared=False, enabled=False):
  """x, failing the step if it is not finite (see the module docstring).

  Args:
    x: mtf.Tensor of a float dtype.
    what: str, what x is, for the message ("loss", "router logits in
      encoder/block_000/layer_003/SwitchFeedForward").
    squared: also fail when the sum of x's squares overflows float32 (as
      Adafactor's second moments of a huge but finite gradient would).
    enabled: bool; False returns x itself.

  Returns:
    mtf.Tensor, x (its gradient passes through unchanged).
  """
  if not enabled:
    return x

  def check(t):
    t32 = tf.cast(t, tf.float32)
    finite = tf.reduce_all(tf.math.is_finite(
        tf.reduce_sum(tf.square(t32)) if squared else t32))
    step = tf.train.get_global_step()
    assertion = tf.debugging.Assert(
        finite, ["non-finite %s at step" % what,
                 step if step is not None else "(no global step)"])
    with tf.control_dependencies([assertion]):
      return tf.identity(t)

  return mtf.slicewise(check, [x], output_shape=x.shape,
                       output_dtype=x.dtype, splittable_dims=x.shape.dims,
                       grad_function=lambda unused_op, dy: [dy],
                       name="check_finite")


@gin.configurable(module="mtf_switch")
class CheckedAdafactorOptimizer(mtf.optimize.AdafactorOptimizer):
  """mesh-tensorflow's Adafactor (its gin bindings apply), whose update of
  a variable fails the step when the variable's gradient is not finite or
  its squares overflow: checked before the update, so no weight or slot
  takes a non-finite value."""

  def apply_grad(self, grad, var):
    if grad is not None:
      grad = checked(grad, "gradient of %s" % var.name, squared=True,
                     enabled=True)
    return super().apply_grad(grad, var)


@gin.configurable(module="mtf_switch")
class SkipNonFiniteAdafactorOptimizer(mtf.optimize.AdafactorOptimizer):
  """mesh-tensorflow's Adafactor (its gin bindings apply) that leaves every
  weight and slot as it was when the step's gradients are not all finite
  (or their squares overflow): the step is skipped, not failed.

  Each update is a select between the new and the old value, not a
  product with a 0/1 mask: NaN times 0 is NaN.  A skipped step also
  prints `non-finite gradients: step skipped, weights unchanged` to
  stderr, T5's binary's log (off TPU it writes no mtf summaries).
  """

  def apply_grads(self, grads, variables):
    slices_seen = []

    def finite_slice(norm):
      # Every mesh position holds the same norm: the first one logs.
      slices_seen.append(norm)
      if len(slices_seen) == 1:
        return _finite_or_logged(norm)
      return tf.math.is_finite(norm)

    finite = mtf.slicewise(finite_slice, [global_norm(grads)],
                           output_shape=[], output_dtype=tf.bool,
                           splittable_dims=[], name="gradients_finite")
    mtf.scalar_summary("nonfinite_step_skipped", mtf.cast(
        mtf.logical_not(finite), tf.float32))
    return [_only_if(finite, op)
            for op in super().apply_grads(grads, variables)]


def _finite_or_logged(norm):
  """Whether `norm` is finite; when not, prints that the step is skipped."""
  finite = tf.math.is_finite(norm)
  # No step number: the global step's increment races with this read.
  logged = tf.cond(
      finite, lambda: tf.constant(True),
      lambda: _after(tf.print(
          "non-finite gradients: step skipped, weights unchanged",
          output_stream=sys.stderr)))
  with tf.control_dependencies([logged]):
    return tf.identity(finite)


def _after(op):
  with tf.control_dependencies([op]):
    return tf.constant(True)


def global_norm(grads):
  """The float32 norm of all the gradients together (None ones left out):
  not finite when any gradient is not, or when their squares overflow."""
  return mtf.sqrt(mtf.add_n(
      [mtf.reduce_sum(mtf.square(mtf.cast(g, tf.float32)))
       for g in grads if g is not None]))


def _only_if(condition, assign):
  """An mtf.Assign like `assign` that changes nothing unless `condition`
  (a scalar bool mtf.Tensor): a plain assignment keeps the old value, an
  assign_add or assign_sub adds 0."""
  keep_old = assign.assign_fn is mtf.assign_slice
  values = []
  for var, value in zip(assign.variables, assign.inputs):
    otherwise = (mtf.cast(var.outputs[0], value.dtype) if keep_old
                 else mtf.zeros_like(value))
    values.append(_select(condition, value, otherwise))
  return mtf.Assign(assign.variables, values, assign_fn=assign.assign_fn,
                    name=assign.name + "_if_finite")


def _select(condition, x, y):
  """x where the scalar `condition` holds, else y (same shape as x)."""
  return mtf.slicewise(
      lambda c, a, b: tf.where(c, a, b), [condition, x, y],
      output_shape=x.shape, output_dtype=x.dtype,
      splittable_dims=x.shape.dims, name="select")
