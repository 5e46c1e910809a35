"""mesh-tensorflow's own MoE1D layer as a control in the studies.

The scaling issue asks whether mesh-tensorflow's MoE1D with switch gating
(`moe_gating = "switch"`) trains like mtf_switch's layer at the studies'
setting.  MoE1D cannot run in them as it is: its switch gating weighs
tokens by the context's `nonpadding`, which is None when the model is
called without a sequence id (the studies' decoder-only LM is), and it
reads the model's layout and mesh shape, which a Unitransformer leaves
None unless given.  `MoE1DControl` calls the same mesh-tensorflow layer
function (`moe.transformer_moe_layer_v1`: routing, dispatch, experts,
load-balancing loss) with every token counted as real when there is no
sequence id, as `SwitchFeedForward` counts them, and None read as one
device.
"""
from mesh_tensorflow.transformer import moe
import gin


@gin.configurable(module="mtf_switch")
class MoE1DControl(moe.MoE1D):
  """mesh-tensorflow's MoE1D that also runs without a sequence id or layout.

  Arguments as MoE1D's (e.g. `moe_gating="switch"`).  Inputs must have the
  context's length dimension (MoE1D's incremental decoding is not kept).
  """

  def call(self, context, x, losses=None):
    if context.length_dim not in x.shape.dims:
      raise ValueError("MoE1DControl needs inputs with the length dimension "
                       "%s; got %s" % (context.length_dim, x.shape))
    nonpadding = context.nonpadding
    if nonpadding is None:  # no sequence id: every token is real
      nonpadding = 1
    y, loss = moe.transformer_moe_layer_v1(
        x, self._hparams.moe_output_dim or context.model.model_dim,
        self._hparams, context.train, context.variable_dtype,
        layout=context.model.layout or "",
        mesh_shape=context.model.mesh_shape or "", nonpadding=nonpadding,
        activation=self._activation,
        num_microbatches=context.num_microbatches,
        token_embeddings=context.input_embeddings)
    if context.losses is not None:
      context.losses.append(loss)
    return y
