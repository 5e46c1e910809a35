r"""Counts a gin-configured model's parameters, FLOPs and per-core bytes.

Builds the model's mesh-tensorflow graph (TensorFlow variables are declared,
never initialized, so nothing the size of the weights is allocated) and
reads the variables' shapes:

  python -m mtf_switch.planning.model_size --gin_file models/switch_base.gin \
      --gin_file layouts/expert_data_32.gin

FLOPs per sequence follow the convention that reproduces the paper's
Table 9 (T5-Base 124B ... Switch-C 890B, inputs 512 / targets 114 tokens):
2 FLOPs per multiply-add of every weight matrix a token passes through
(one expert per token for Switch, two for top-2), the output logits, and the
attention scores counted once (QK^T).  The router and the dispatch/combine
einsums are reported apart: the paper does not count them.
"""
import collections
import sys

from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import gin
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

import mtf_switch  # noqa: F401  (gin search path, configurables)
from mtf_switch import cli
from mtf_switch import layers
from mtf_switch import models
from mtf_switch.training import mesh as mesh_lib

ModelSize = collections.namedtuple("ModelSize", [
    "total_params", "expert_params", "non_expert_params", "flops_per_seq",
    "router_flops_per_seq", "param_bytes_per_core", "shard_shapes"])
ModelSize.__doc__ = """What `count` finds.

Attributes:
  total_params, expert_params, non_expert_params: ints.
  flops_per_seq: forward FLOPs of one (inputs, targets) pair, Table 9's
    convention (see the module docstring).
  router_flops_per_seq: the routers' FLOPs, not in flops_per_seq.
  param_bytes_per_core: float32 bytes of the largest core's weights under
    the layout.
  shard_shapes: dict from variable name to (full shape, per-core shape),
    both lists of ints.
"""


def _layer_tokens(name, input_length, target_length):
  return input_length if name.startswith("encoder/") else target_length


def _attention_score_flops(name, size, d_model, input_length, target_length):
  """QK^T FLOPs of the attention layer whose query weights are `name`."""
  query_length = _layer_tokens(name, input_length, target_length)
  memory_length = (input_length if "EncDecAttention" in name
                   else query_length)
  return 2 * query_length * memory_length * (size // d_model)


def _experts_per_token(model):
  """The (common) num_selected_experts of the model's Switch layers."""
  choices = {layer.router.num_selected_experts
             for stack in (model.encoder.layer_stack, model.decoder.layer_stack)
             for layer in stack.layers
             if isinstance(layer, layers.SwitchFeedForward)}
  if len(choices) > 1:
    raise ValueError("Switch layers with different num_selected_experts %s "
                     "are not supported by the counter" % sorted(choices))
  return choices.pop() if choices else 0


def build_variables(batch_size, input_length, target_length, vocab_size,
                    mesh_shape, layout):
  """Builds the gin-configured Bitransformer; returns its mtf variables."""
  model = models.make_bitransformer(vocab_size, mesh_shape, layout)
  with tf.Graph().as_default():
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    batch_dim = mtf.Dimension("batch", batch_size)
    inputs = mtf.zeros(mesh, [batch_dim, mtf.Dimension("length",
                                                        input_length)],
                       tf.int32)
    targets = mtf.zeros(mesh, [batch_dim, mtf.Dimension("length",
                                                         target_length)],
                        tf.int32)
    model.call_simple(inputs=inputs, targets=targets, compute_loss=True,
                      mode=tf.estimator.ModeKeys.TRAIN)
    return list(graph.trainable_variables), model


def count(mesh_shape="", layout="", input_length=512, target_length=114,
          vocab_size=32128, batch_size=None):
  """Sizes of the gin-configured model (gin must be parsed already).

  Args:
    mesh_shape: mesh shape string ("" for one core).
    layout: layout rules string.
    input_length: encoder tokens per sequence.
    target_length: decoder tokens per sequence.
    vocab_size: vocabulary size (T5's SentencePiece: 32128).
    batch_size: sequences in the graph; default: enough for one group per
      batch shard.

  Returns:
    ModelSize.
  """
  mesh_impl = mesh_lib.cpu_mesh_impl(mesh_shape, layout)
  if batch_size is None:
    batch_size = mesh_impl.shape.size
  variables, model = build_variables(batch_size, input_length, target_length,
                                     vocab_size, mesh_impl.shape,
                                     mesh_impl.layout_rules)
  return measure(variables, model, mesh_impl, input_length, target_length)


def measure(variables, model, mesh_impl, input_length, target_length):
  """Sizes of a built model's variables (see `count`).

  Args:
    variables: the model's trainable mtf variables.
    model: the Bitransformer that made them.
    mesh_impl: the mtf.MeshImpl of the layout.
    input_length: encoder tokens per sequence.
    target_length: decoder tokens per sequence.

  Returns:
    ModelSize.
  """
  d_model = model.encoder.model_dim.size
  top_k = _experts_per_token(model)

  total = expert = flops = router_flops = 0
  per_core_bytes = 0
  shard_shapes = {}
  for v in variables:
    shape = v.shape
    total += shape.size
    shard_shapes[v.name] = (shape.to_integer_list,
                            mesh_impl.slice_shape(shape))
    per_core_bytes += 4 * mesh_impl.slice_size(shape)
    tokens = _layer_tokens(v.name, input_length, target_length)
    if "experts" in shape.dimension_names:
      num_experts = shape.get_dim_by_name("experts").size
      expert += shape.size
      flops += 2 * tokens * top_k * shape.size // num_experts
    elif "router" in v.name:
      router_flops += 2 * tokens * shape.size
    elif shape.ndims < 2 or "relative_attention_bias" in v.name:
      continue
    elif "vocab" in shape.dimension_names:
      # Embedding lookups are free; the shared embedding is also the
      # softmax weights, applied to every target token.
      flops += 2 * target_length * shape.size
    else:
      flops += 2 * tokens * shape.size
      if v.name.endswith("Attention/q"):
        flops += _attention_score_flops(v.name, shape.size, d_model,
                                        input_length, target_length)
  return ModelSize(total, expert, total - expert, flops, router_flops,
                   per_core_bytes, shard_shapes)


def layout_from_gin():
  """(mesh_shape, layout_rules) of the parsed layout gin file; ("", "")
  (one core) without one."""
  try:
    return (gin.query_parameter("utils.run.mesh_shape"),
            gin.query_parameter("utils.run.layout_rules"))
  except ValueError:  # no layout file
    return "", ""


def _human(n):
  for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(n) >= scale:
      return "%.4g%s" % (n / scale, unit)
  return str(n)


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  cli.add_flags(parser)  # a model gin file, then optionally a layout
  parser.add_argument("--input_length", type=cli.positive_int, default=512)
  parser.add_argument("--target_length", type=cli.positive_int, default=114)
  parser.add_argument("--vocab_size", type=cli.positive_int, default=32128)
  args = parser.parse_args(argv)
  # Counting builds a graph and trains nothing: all its errors are the gin
  # model's or the layout's (each named).
  with cli.refusals(parser):
    gin_files = cli.parse(args)
    mesh_shape, layout = layout_from_gin()
    size = count(mesh_shape, layout, args.input_length, args.target_length,
                 args.vocab_size)
  print("model:             %s" % " + ".join(gin_files))
  print("mesh / layout:     %s / %s" % (mesh_shape or "1 core",
                                        layout or "-"))
  print("parameters:        %s (%d)" % (_human(size.total_params),
                                        size.total_params))
  print("  expert:          %s" % _human(size.expert_params))
  print("  non-expert:      %s" % _human(size.non_expert_params))
  print("FLOPs/seq:         %s (inputs %d, targets %d tokens)"
        % (_human(size.flops_per_seq), args.input_length,
           args.target_length))
  print("  router (apart):  %s" % _human(size.router_flops_per_seq))
  print("float32 parameter bytes per core: %s"
        % _human(size.param_bytes_per_core))


if __name__ == "__main__":
  tf.disable_eager_execution()
  sys.exit(main())
