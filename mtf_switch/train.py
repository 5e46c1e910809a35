r"""Trains a small Switch model on CPU and prints loss and routing metrics.

The README's main command.  The model comes from gin (default
`models/switch_tiny.gin`), the mesh from --mesh_shape and --layout, and the
data, for now, from a synthetic copy task: each target is its input
sequence, so a learning model's loss falls within a few dozen steps.

  python -m mtf_switch.train --steps 100 \
      --mesh_shape "batch:1,experts:2" --layout "batch:batch;experts:experts"
"""
import argparse
import collections
import sys
import time

from mtf_switch import compat  # noqa: F401  (before mesh_tensorflow)

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import tensorflow.compat.v1 as tf

import mtf_switch
from mtf_switch import layers

TrainGraph = collections.namedtuple(
    "TrainGraph", ["graph", "inputs", "targets", "loss", "train_op",
                   "metrics", "scalars", "init_ops"])
TrainGraph.__doc__ = """A lowered training step on CPU.

Attributes:
  graph: the tf.Graph.
  inputs, targets: int32 placeholders [batch, length].
  loss: float32 scalar tf.Tensor.
  train_op: tf op applying one optimizer step.
  metrics: dict from name to tf.Tensor of the Switch layers' routing metrics.
  scalars: dict from TensorBoard tag to the tf.Tensor of the loss and of the
    scalars that the model exported with mtf.scalar_summary (the routing
    metrics among them).
  init_ops: ops to run once in a new session, in order.
"""


def cpu_mesh_impl(mesh_shape, layout):
  """A PlacementMeshImpl with one (virtual) CPU device per mesh position.

  All slices run on the host CPU; the slicing and the collective operations
  are those of a real multi-device mesh, so results equal a 1-device run.

  Args:
    mesh_shape: input to mtf.convert_to_shape, e.g. "batch:2,experts:2".
    layout: input to mtf.convert_to_layout_rules, e.g. "experts:experts".

  Returns:
    mtf.placement_mesh_impl.PlacementMeshImpl.
  """
  mesh_shape = mtf.convert_to_shape(mesh_shape)
  return mtf.placement_mesh_impl.PlacementMeshImpl(
      mesh_shape, mtf.convert_to_layout_rules(layout),
      [""] * mesh_shape.size)


def make_model(vocab_size, mesh_shape, layout):
  """The gin-configured Bitransformer (see models/switch_tiny.gin)."""
  return transformer.make_bitransformer(
      input_vocab_size=vocab_size, output_vocab_size=vocab_size,
      mesh_shape=mesh_shape, layout=layout)


def build_train_graph(model, batch_size, length, mesh_shape="", layout="",
                      learning_rate=1e-2, activation_dtype=tf.float32):
  """Builds and lowers one Adafactor training step of `model` on CPU.

  Args:
    model: a Bitransformer.
    batch_size: int.
    length: int, input and target length.
    mesh_shape: mesh shape string; "" is a single device.
    layout: layout rules string.
    learning_rate: float, Adafactor's learning rate.
    activation_dtype: tf.float32 or tf.bfloat16.

  Returns:
    TrainGraph.
  """
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(1)
    inputs = tf.placeholder(tf.int32, [batch_size, length], name="inputs")
    targets = tf.placeholder(tf.int32, [batch_size, length], name="targets")
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    dims = [mtf.Dimension("batch", batch_size),
            mtf.Dimension("length", length)]
    _, loss = model.call_simple(
        inputs=mtf.import_tf_tensor(mesh, inputs, dims),
        targets=mtf.import_tf_tensor(mesh, targets, dims),
        compute_loss=True, mode=tf.estimator.ModeKeys.TRAIN,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32,
                                         activation_dtype))
    loss = mtf.cast(loss, tf.float32)
    variables = mtf_graph.trainable_variables
    grads = mtf.gradients([loss], [v.outputs[0] for v in variables])
    optimizer = mtf.optimize.AdafactorOptimizer(learning_rate=learning_rate)
    update_ops = optimizer.apply_grads(grads, variables)
    metrics = layers.routing_metrics(mtf_graph)

    lowering = mtf.Lowering(mtf_graph,
                            {mesh: cpu_mesh_impl(mesh_shape, layout)})
    tf_loss = lowering.export_to_tf_tensor(loss)
    tf_metrics = {name: lowering.export_to_tf_tensor(value)
                  for name, value in metrics.items()}
    train_op = tf.group([lowering.lowered_operation(op) for op in update_ops])
    scalars = dict(
        tf.get_collection(mtf.utils.SCALAR_SUMMARIES_COLLECTION_KEY),
        loss=tf_loss)
    init_ops = [tf.global_variables_initializer(),
                lowering.copy_masters_to_slices()]
  return TrainGraph(graph, inputs, targets, tf_loss, train_op, tf_metrics,
                    scalars, init_ops)


def copy_task_batches(batch_size, length, vocab_size, seed=0):
  """Yields (inputs, targets) int32 batches of a synthetic copy task.

  Tokens are drawn from [2, vocab_size) (0 is padding, 1 end-of-sequence);
  the targets equal the inputs.
  """
  rng = np.random.RandomState(seed)
  while True:
    tokens = rng.randint(2, vocab_size, size=(batch_size, length))
    yield tokens.astype(np.int32), tokens.astype(np.int32)


def scalar_summary(scalars):
  """A tf.Summary of {tag: number}, for TensorBoard."""
  return tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(v))
                           for tag, v in sorted(scalars.items())])


def summarize_metrics(values):
  """One console line per Switch layer: dropped fraction and expert load.

  Args:
    values: dict from "<layer>/<metric>" to numpy values.

  Returns:
    list of str.
  """
  by_layer = collections.OrderedDict()
  for name, value in values.items():
    layer, metric = name.rsplit("/", 1)
    by_layer.setdefault(layer, {})[metric] = value
  lines = []
  for layer, m in by_layer.items():
    load = " ".join("%.2f" % f for f in m["expert_fraction"])
    lines.append(
        "  %s: dropped %.3f  aux_loss %.4f  confidence %.3f  "
        "entropy %.3f  expert load [%s]"
        % (layer, m["dropped_fraction"], m["aux_loss"],
           m["router_confidence"], m["router_entropy"], load))
  return lines


def train(steps, batch_size, length, vocab_size, mesh_shape, layout,
          learning_rate, log_every, out=sys.stdout, model_dir=None):
  """Trains the gin-configured model on the copy task, logging to `out`.

  With a model_dir, TensorBoard summaries (loss and routing metrics) are
  written there every log_every steps.

  Returns:
    list of (step, loss) pairs, one per step.
  """
  model = make_model(vocab_size, mesh_shape, layout)
  step_graph = build_train_graph(model, batch_size, length, mesh_shape,
                                 layout, learning_rate)
  batches = copy_task_batches(batch_size, length, vocab_size)
  history = []
  writer = model_dir and tf.summary.FileWriter(model_dir, step_graph.graph)
  with tf.Session(graph=step_graph.graph) as sess:
    for op in step_graph.init_ops:
      sess.run(op)
    start = time.time()
    for step in range(1, steps + 1):
      inputs, targets = next(batches)
      feed = {step_graph.inputs: inputs, step_graph.targets: targets}
      loss, metrics, scalars, _ = sess.run(
          [step_graph.loss, step_graph.metrics, step_graph.scalars,
           step_graph.train_op], feed)
      history.append((step, float(loss)))
      if step % log_every == 0 or step == steps:
        if writer:
          writer.add_summary(scalar_summary(scalars), step)
          writer.flush()
        elapsed = time.time() - start
        print("step %d  loss %.4f  %.2f steps/s  %.0f tokens/s"
              % (step, loss, step / elapsed,
                 step * batch_size * length * 2 / elapsed), file=out)
        for line in summarize_metrics(metrics):
          print(line, file=out)
        out.flush()
  return history


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--gin_file", action="append", default=None,
                      help="gin file(s), by name or path "
                           "(default: models/switch_tiny.gin)")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="gin binding(s), e.g. "
                           "'SwitchFeedForward.num_experts = 4'")
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--length", type=int, default=16)
  parser.add_argument("--vocab_size", type=int, default=64)
  parser.add_argument("--learning_rate", type=float, default=1e-2)
  parser.add_argument("--mesh_shape", default="batch:1,experts:2")
  parser.add_argument("--layout", default="batch:batch;experts:experts")
  parser.add_argument("--log_every", type=int, default=10)
  parser.add_argument("--model_dir", default=None,
                      help="where to write TensorBoard summaries")
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  gin.parse_config_files_and_bindings(
      args.gin_file or ["models/switch_tiny.gin"], args.gin_param)
  print("mtf_switch %s: training %s for %d steps on mesh %r"
        % (mtf_switch.__name__, ",".join(args.gin_file or
                                         ["models/switch_tiny.gin"]),
           args.steps, args.mesh_shape))
  history = train(args.steps, args.batch_size, args.length, args.vocab_size,
                  args.mesh_shape, args.layout, args.learning_rate,
                  args.log_every, model_dir=args.model_dir)
  print("loss: first step %.4f, last step %.4f"
        % (history[0][1], history[-1][1]))


if __name__ == "__main__":
  main()
