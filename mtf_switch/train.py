r"""Trains a small Switch model on CPU: the README's main job.

The model comes from gin (default `models/switch_tiny.gin`), the mesh from
--mesh_shape and --layout, the data from a seqio task (default: T5's span
corruption on the offline default corpus, `mtf_switch.corpus`).  It prints
progress and per-layer routing metrics, writes TensorBoard summaries and
checkpoints to --model_dir, resumes from the last checkpoint there, and ends
with the validation split's negative log perplexity.

  python -m mtf_switch.train --model_dir /tmp/switch_tiny --steps 300
"""
import argparse
import collections
import os
import sys
import time

from mtf_switch import compat  # noqa: F401  (before mesh_tensorflow)

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import seqio
import tensorflow.compat.v1 as tf
import tensorflow_datasets as tfds

import mtf_switch  # noqa: F401  (gin search path, configurables)
from mtf_switch import layers
from mtf_switch import tasks

StepGraph = collections.namedtuple(
    "StepGraph", ["graph", "inputs", "targets", "loss", "train_op",
                  "metrics", "scalars", "token_log_likelihood", "num_tokens",
                  "global_step", "saver", "init_ops", "save_ops"])
StepGraph.__doc__ = """A lowered training or evaluation step on CPU.

Attributes:
  graph: the tf.Graph.
  inputs, targets: int32 placeholders [batch, length]; 0 is padding.
  loss: float32 scalar, the model's training loss (with the aux losses).
  train_op: applies one optimizer step and increments global_step (None in
    evaluation).
  metrics: dict from name to tf.Tensor of the Switch layers' routing metrics.
  scalars: dict from TensorBoard tag to tf.Tensor: the loss and the scalars
    the model exported with mtf.scalar_summary (routing metrics among them).
  token_log_likelihood: float32, summed log p(target token) over the batch's
    real target tokens.
  num_tokens: float32, the number of real target tokens.
  global_step: the tf global step variable.
  saver: tf.train.Saver of the master weights (and optimizer slots) and the
    global step, independent of the mesh.
  init_ops: ops to run, in order, in a new session without a checkpoint.
  save_ops: ops to run before saving (slices back to masters); after a
    restore, run init_ops[-1:] (masters to slices).
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


def build_step_graph(model, batch_size, input_length, target_length,
                     mesh_shape="", layout="", train=True,
                     learning_rate=1e-2, activation_dtype=tf.float32):
  """Builds and lowers one Adafactor training (or evaluation) step on CPU.

  Args:
    model: a Bitransformer.
    batch_size: int.
    input_length: int.
    target_length: int.
    mesh_shape: mesh shape string; "" is a single device.
    layout: layout rules string.
    train: bool; False builds an evaluation step (eval capacity factor, no
      dropout, no update).
    learning_rate: float, Adafactor's learning rate.
    activation_dtype: tf.float32 or tf.bfloat16.

  Returns:
    StepGraph.
  """
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(1)
    global_step = tf.train.get_or_create_global_step()
    inputs = tf.placeholder(tf.int32, [batch_size, input_length], "inputs")
    targets = tf.placeholder(tf.int32, [batch_size, target_length],
                             "targets")
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    batch_dim = mtf.Dimension("batch", batch_size)
    mtf_targets = mtf.import_tf_tensor(
        mesh, targets, [batch_dim, mtf.Dimension("length", target_length)])
    logits, loss = model.call_simple(
        inputs=mtf.import_tf_tensor(
            mesh, inputs, [batch_dim, mtf.Dimension("length", input_length)]),
        targets=mtf_targets, compute_loss=True,
        mode=(tf.estimator.ModeKeys.TRAIN if train
              else tf.estimator.ModeKeys.EVAL),
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32,
                                         activation_dtype))
    loss = mtf.cast(loss, tf.float32)
    log_likelihood, num_tokens = _target_log_likelihood(logits, mtf_targets)
    update_ops = []
    if train:
      variables = mtf_graph.trainable_variables
      grads = mtf.gradients([loss], [v.outputs[0] for v in variables])
      optimizer = mtf.optimize.AdafactorOptimizer(learning_rate=learning_rate)
      update_ops = optimizer.apply_grads(grads, variables)
    metrics = layers.routing_metrics(mtf_graph)

    # No autostacking: checkpoints keep one entry per model variable, the
    # same whatever the mesh.
    lowering = mtf.Lowering(mtf_graph,
                            {mesh: cpu_mesh_impl(mesh_shape, layout)},
                            autostack=False)
    tf_loss = lowering.export_to_tf_tensor(loss)
    train_op = None
    if train:
      train_op = tf.group(
          [lowering.lowered_operation(op) for op in update_ops] +
          [tf.assign_add(global_step, 1)])
    scalars = dict(
        tf.get_collection(mtf.utils.SCALAR_SUMMARIES_COLLECTION_KEY),
        loss=tf_loss)
    saver = tf.train.Saver(
        [v.get_master() for v in mtf_graph.all_variables] + [global_step],
        max_to_keep=3)
    return StepGraph(
        graph, inputs, targets, tf_loss, train_op,
        {k: lowering.export_to_tf_tensor(v) for k, v in metrics.items()},
        scalars, lowering.export_to_tf_tensor(log_likelihood),
        lowering.export_to_tf_tensor(num_tokens), global_step, saver,
        [tf.global_variables_initializer(),
         lowering.copy_masters_to_slices()],
        [lowering.copy_slices_to_masters()])


def _target_log_likelihood(logits, targets):
  """Summed log-likelihood of the real (non-zero) target tokens, and count."""
  vocab_dim = logits.shape.dims[-1]
  log_probs = mtf.log_softmax(mtf.cast(logits, tf.float32), vocab_dim)
  token_log_probs = mtf.reduce_sum(
      log_probs * mtf.one_hot(targets, vocab_dim, dtype=tf.float32),
      reduced_dim=vocab_dim)
  weights = mtf.cast(mtf.not_equal(targets, 0), tf.float32)
  return (mtf.reduce_sum(token_log_probs * weights),
          mtf.reduce_sum(weights))


def start_session(step_graph, model_dir):
  """A session with the latest checkpoint of model_dir restored, if any.

  Returns:
    (tf.Session, the checkpoint path restored or None).
  """
  sess = tf.Session(graph=step_graph.graph)
  checkpoint = model_dir and tf.train.latest_checkpoint(model_dir)
  if checkpoint:
    sess.run(step_graph.init_ops[0])  # slices and anything not saved
    step_graph.saver.restore(sess, checkpoint)
    sess.run(step_graph.init_ops[1])  # masters to slices
  else:
    for op in step_graph.init_ops:
      sess.run(op)
  return sess, checkpoint


def save(sess, step_graph, model_dir):
  sess.run(step_graph.save_ops)
  return step_graph.saver.save(
      sess, os.path.join(model_dir, "model.ckpt"),
      global_step=sess.run(step_graph.global_step), write_meta_graph=False)


def task_batches(task_name, split, batch_size, input_length, target_length,
                 repeat=True, skip_batches=0, seed=0):
  """Yields numpy {"inputs", "targets"} batches of a seqio task, padded.

  Args:
    task_name: a registered seqio task or mixture.
    split: "train" or "validation".
    batch_size, input_length, target_length: ints.
    repeat: loop over the split forever (shuffled) or once (in order).
    skip_batches: batches to skip (a resumed run continues the data).
    seed: shuffle seed.
  """
  lengths = {"inputs": input_length, "targets": target_length}
  dataset = tasks.get_task_or_mixture(task_name).get_dataset(
      lengths, split=split, shuffle=repeat, seed=seed, use_cached=False,
      try_in_mem_cache=False, num_epochs=None if repeat else 1)
  dataset = seqio.utils.trim_and_pad_dataset(
      dataset.map(lambda ex: {k: ex[k] for k in lengths}), lengths)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  return iter(tfds.as_numpy(dataset.skip(skip_batches)))


def evaluate(model, model_dir, task_name, batch_size, input_length,
             target_length, mesh_shape, layout, max_batches=20):
  """Validation negative log perplexity (mean log p per target token).

  Restores the latest checkpoint of model_dir; without one, evaluates the
  freshly initialized model.
  """
  step_graph = build_step_graph(model, batch_size, input_length,
                                target_length, mesh_shape, layout,
                                train=False)
  sess, _ = start_session(step_graph, model_dir)
  total, count = 0.0, 0.0
  with sess:
    for i, batch in enumerate(task_batches(
        task_name, "validation", batch_size, input_length, target_length,
        repeat=False)):
      if i == max_batches:
        break
      log_likelihood, num_tokens = sess.run(
          [step_graph.token_log_likelihood, step_graph.num_tokens],
          {step_graph.inputs: batch["inputs"],
           step_graph.targets: batch["targets"]})
      total += log_likelihood
      count += num_tokens
  return total / max(count, 1.0)


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


def train(model, model_dir, task_name, steps, batch_size, input_length,
          target_length, mesh_shape="", layout="", learning_rate=1e-2,
          log_every=10, save_every=100, out=sys.stdout):
  """Trains `model` to `steps` total steps, resuming from model_dir.

  Returns:
    list of (step, loss) of the steps run now.
  """
  step_graph = build_step_graph(model, batch_size, input_length,
                                target_length, mesh_shape, layout,
                                learning_rate=learning_rate)
  tf.io.gfile.makedirs(model_dir)
  sess, checkpoint = start_session(step_graph, model_dir)
  history = []
  with sess:
    step = int(sess.run(step_graph.global_step))
    if checkpoint:
      print("resuming from %s (step %d)" % (checkpoint, step), file=out)
    batches = task_batches(task_name, "train", batch_size, input_length,
                           target_length, skip_batches=step)
    writer = tf.summary.FileWriter(model_dir)
    tokens_per_step = batch_size * (input_length + target_length)
    start, start_step = time.time(), step
    while step < steps:
      batch = next(batches)
      loss, metrics, scalars, _ = sess.run(
          [step_graph.loss, step_graph.metrics, step_graph.scalars,
           step_graph.train_op],
          {step_graph.inputs: batch["inputs"],
           step_graph.targets: batch["targets"]})
      step += 1
      history.append((step, float(loss)))
      if step % log_every == 0 or step == steps:
        rate = (step - start_step) / (time.time() - start)
        print("step %d/%d  loss %.4f  %.2f steps/s  %.0f tokens/s"
              % (step, steps, loss, rate, rate * tokens_per_step), file=out)
        for line in summarize_metrics(metrics):
          print(line, file=out)
        out.flush()
        writer.add_summary(scalar_summary(scalars), step)
        writer.flush()
      if step % save_every == 0 or step == steps:
        print("saved %s" % save(sess, step_graph, model_dir), file=out)
  return history


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", default="runs/switch_tiny",
                      help="checkpoints and TensorBoard summaries; an "
                           "existing one is resumed")
  parser.add_argument("--gin_file", action="append", default=None,
                      help="gin file(s), by name or path "
                           "(default: models/switch_tiny.gin)")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="gin binding(s), e.g. "
                           "'mtf_switch.SwitchFeedForward.num_experts = 8'")
  parser.add_argument("--task", default="mtf_switch_default_span_corruption")
  parser.add_argument("--steps", type=int, default=300,
                      help="total steps, counting those of a resumed run")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--input_length", type=int, default=64)
  parser.add_argument("--target_length", type=int, default=16)
  parser.add_argument("--learning_rate", type=float, default=1e-2)
  parser.add_argument("--mesh_shape", default="batch:1,experts:2")
  parser.add_argument("--layout", default="batch:batch;experts:experts")
  parser.add_argument("--log_every", type=int, default=25)
  parser.add_argument("--save_every", type=int, default=100)
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  task = tasks.get_task_or_mixture(args.task)
  vocab_size = task.output_features["targets"].vocabulary.vocab_size
  gin_files = args.gin_file or ["models/switch_tiny.gin"]
  gin.parse_config_files_and_bindings(gin_files, args.gin_param)
  model = make_model(vocab_size, args.mesh_shape, args.layout)
  print("training %s on %s for %d steps, mesh %r, in %s" % (
      " + ".join(gin_files), args.task, args.steps, args.mesh_shape,
      args.model_dir))
  data = dict(task_name=args.task, batch_size=args.batch_size,
              input_length=args.input_length,
              target_length=args.target_length, mesh_shape=args.mesh_shape,
              layout=args.layout)
  if not tf.train.latest_checkpoint(args.model_dir):
    print("validation neg. log perplexity before training: %.4f"
          % evaluate(model, None, **data))
  train(model, args.model_dir, steps=args.steps,
        learning_rate=args.learning_rate, log_every=args.log_every,
        save_every=args.save_every, **data)
  print("validation neg. log perplexity after %d steps: %.4f"
        % (args.steps, evaluate(model, args.model_dir, **data)))


if __name__ == "__main__":
  main()
