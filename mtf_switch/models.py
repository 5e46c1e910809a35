"""Transformer models whose weights start at a reduced scale (Section 2.4).

The paper draws every weight matrix from a truncated normal with
std = sqrt(s / n_in) and reduces s from 1.0 to 0.1 for Switch models
(Table 3: 0.1x init trains stably, 1.0x does not).  mesh-tensorflow's layers
each pick their own initializer (embeddings, attention, dense layers), so
`init_scale_scope` scales them all at the TensorFlow variable level: every
weight of rank >= 2 (matrices: embeddings, attention, experts, router) has
its initial values multiplied by sqrt(init_scale), i.e. its variance by
init_scale.  Rank-0/1 variables (layer-norm scales, biases) keep theirs.

Use with gin:

  make_bitransformer.bitransformer_cls = @mtf_switch.ScaledInitBitransformer
  mtf_switch.ScaledInitBitransformer.init_scale = 0.1
"""
import contextlib
import math

import gin
from mesh_tensorflow.transformer import transformer
import tensorflow.compat.v1 as tf

from mtf_switch import guard
from mtf_switch.t5 import checkpoint_check


def _scaled_initializer(initializer, factor):
  def init(*args, **kwargs):
    value = initializer(*args, **kwargs)
    return value * tf.cast(factor, value.dtype)
  return init


@contextlib.contextmanager
def init_scale_scope(init_scale):
  """Variables created inside start with init_scale times their variance.

  Args:
    init_scale: float > 0; 1.0 changes nothing.

  Yields:
    None.

  Raises:
    ValueError: if init_scale <= 0.
  """
  if not init_scale > 0:
    raise ValueError("init_scale must be > 0 (0.1 for Switch models), got %r"
                     % (init_scale,))
  if init_scale == 1.0:
    yield
    return
  factor = math.sqrt(init_scale)

  def scaled_getter(getter, *args, **kwargs):
    shape = kwargs.get("shape")
    if shape is not None and len(shape) >= 2:
      # None means tf.get_variable's default for float variables (used by
      # e.g. mtf's relative attention bias).
      initializer = (kwargs.get("initializer")
                     or tf.glorot_uniform_initializer())
      kwargs["initializer"] = _scaled_initializer(initializer, factor)
    return getter(*args, **kwargs)

  with tf.variable_scope(tf.get_variable_scope(), custom_getter=scaled_getter,
                         auxiliary_name_scope=False):
    yield


@gin.configurable(module="mtf_switch")
class ScaledInitBitransformer(transformer.Bitransformer):
  """mtf's Bitransformer with a gin-configurable weight init scale."""

  def __init__(self, encoder, decoder, shared_embedding=True,
               init_scale=1.0):
    super().__init__(encoder, decoder, shared_embedding=shared_embedding)
    self.init_scale = init_scale

  def call_simple(self, *args, **kwargs):
    """As Bitransformer's; the loss is checked finite where
    `guard.checked` is enabled (T5's binary), and in T5's binary the
    weights are checked against the checkpoint it will restore."""
    with init_scale_scope(self.init_scale):
      logits, loss = super().call_simple(*args, **kwargs)
    checkpoint_check.check_t5_binary_graph(logits.mesh.graph)
    if loss is not None:
      loss = guard.checked(loss, "loss")
    return logits, loss

  def decode(self, inputs, *args, **kwargs):
    """As Bitransformer's; in T5's binary, the weights are checked against
    the checkpoint it will restore."""
    with init_scale_scope(self.init_scale):
      outputs = super().decode(inputs, *args, **kwargs)
    checkpoint_check.check_t5_binary_graph(inputs.mesh.graph)
    return outputs


@gin.configurable(module="mtf_switch")
class ScaledInitUnitransformer(transformer.Unitransformer):
  """mtf's Unitransformer (e.g. a decoder-only LM) with an init scale."""

  def __init__(self, *args, init_scale=1.0, **kwargs):
    super().__init__(*args, **kwargs)
    self.init_scale = init_scale

  def _call_internal(self, *args, **kwargs):
    with init_scale_scope(self.init_scale):
      return super()._call_internal(*args, **kwargs)


def make_bitransformer(vocab_size, mesh_shape="", layout=""):
  """The gin-configured Bitransformer (e.g. models/switch_tiny.gin).

  Args:
    vocab_size: int, shared by inputs and targets.
    mesh_shape: mesh shape string; "" is one device.
    layout: layout rules string.

  Returns:
    transformer.Bitransformer (its class as gin binds it).
  """
  return transformer.make_bitransformer(
      input_vocab_size=vocab_size, output_vocab_size=vocab_size,
      mesh_shape=mesh_shape, layout=layout)


def make_lm(vocab_size, mesh_shape="", layout=""):
  """The gin-configured decoder-only language model.

  A `ScaledInitUnitransformer` (init scale from gin) over
  `transformer.make_layer_stack()`, autoregressive; its inputs are its
  targets shifted right (see `mtf_switch.training.data`).
  """
  return ScaledInitUnitransformer(
      layer_stack=transformer.make_layer_stack(),
      input_vocab_size=vocab_size, output_vocab_size=vocab_size,
      autoregressive=True, mesh_shape=mesh_shape, layout=layout)


MODEL_TYPES = {"bitransformer": make_bitransformer, "lm": make_lm}


@gin.configurable(module="mtf_switch")
def make_model(vocab_size, mesh_shape="", layout="",
               model_type="bitransformer"):
  """The gin-configured model of `model_type` (one of MODEL_TYPES).

  Raises:
    ValueError: on an unknown model_type.
  """
  if model_type not in MODEL_TYPES:
    raise ValueError("model_type must be one of %s, got %r"
                     % (sorted(MODEL_TYPES), model_type))
  return MODEL_TYPES[model_type](vocab_size, mesh_shape, layout)
