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
"""
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
