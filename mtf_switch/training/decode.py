"""Greedy decoding on CPU, and a seqio task's metrics on what is decoded.

`build_decode_graph` lowers an encoder-decoder model's `decode` (greedy,
temperature 0: T5's evaluation default) onto a CPU mesh; its graph restores
the checkpoints of the main job's step graphs (same variables).
`task_metrics` decodes a task's validation examples and scores them with
the task's own postprocessor and metric functions, as T5's evaluation does.
"""
import collections

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import tasks
from mtf_switch.training import checkpoints
from mtf_switch.training import data
from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import step as step_lib

DecodeGraph = collections.namedtuple(
    "DecodeGraph", ["graph", "inputs", "outputs", "saver", "init_ops"])
DecodeGraph.__doc__ = """A lowered greedy-decoding step on CPU.

Attributes:
  graph: the tf.Graph.
  inputs: int32 placeholder [batch, input_length]; 0 is padding.
  outputs: int32 [batch, decode length], the decoded ids (0 after EOS).
  saver: tf.train.Saver of the master weights (restores a step graph's
    checkpoints).
  init_ops: as StepGraph's (checkpoints.start_session runs them).
"""


def build_decode_graph(model, batch_size, input_length, max_decode_length,
                       mesh_shape="", layout="", mesh_devices=None):
  """Builds and lowers greedy decoding of an encoder-decoder model.

  Args:
    model: a transformer.Bitransformer.
    batch_size, input_length: ints, the shape of the inputs.
    max_decode_length: int, the longest output.
    mesh_shape, layout, mesh_devices: as the step graph's.

  Returns:
    DecodeGraph.

  Raises:
    ValueError: if model is not an encoder-decoder (a decoder-only LM has
      no inputs to decode from).
  """
  if not isinstance(model, transformer.Bitransformer):
    raise ValueError("decoding for metrics needs an encoder-decoder model "
                     "(a Bitransformer), got %s" % type(model).__name__)
  graph = tf.Graph()
  with graph.as_default():
    inputs = tf.placeholder(tf.int32, [batch_size, input_length], "inputs")
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    mtf_inputs = mtf.import_tf_tensor(
        mesh, step_lib.checked_ids(inputs, step_lib.vocab_sizes(model)[0]),
        [mtf.Dimension("batch", batch_size),
         mtf.Dimension("length", input_length)])
    outputs = model.decode(mtf_inputs, temperature=0.0,
                           max_decode_length=max_decode_length)
    lowering = mesh_lib.lower(mtf_graph, mesh, mesh_shape, layout,
                              devices=mesh_devices)
    saver = tf.train.Saver([v.get_master() for v in mtf_graph.all_variables])
    return DecodeGraph(
        graph, inputs, lowering.export_to_tf_tensor(outputs), saver,
        [tf.global_variables_initializer(),
         lowering.copy_masters_to_slices()])


def task_metrics(model, model_dir, task_name, batch_size, input_length,
                 target_length, mesh_shape="", layout="", max_batches=None,
                 out=None, mesh_devices=None):
  """Decodes a task's validation examples and scores them with its metrics.

  Args:
    model: a transformer.Bitransformer.
    model_dir: the checkpoint to decode with (its latest).
    task_name: a seqio task with metric functions.
    batch_size, input_length, target_length: shapes; outputs are at most
      target_length tokens long.
    mesh_shape, layout, mesh_devices: as the step graph's.
    max_batches: decode at most this many batches (None: the whole split,
      the last partial batch padded).
    out: file for a progress line per batch, or None.

  Returns:
    as `score`; the targets are those of the batches (trimmed to
    target_length).
  """
  task = tasks.get_task_or_mixture(task_name)
  vocabulary = task.output_features["targets"].vocabulary
  decode_graph = build_decode_graph(model, batch_size, input_length,
                                    target_length, mesh_shape, layout,
                                    mesh_devices)
  targets, predictions = [], []
  sess, _ = checkpoints.start_session(decode_graph, model_dir)
  with sess:
    for i, batch in enumerate(data.task_batches(
        task_name, "validation", batch_size, input_length, target_length,
        repeat=False, drop_remainder=False)):
      if i == max_batches:
        break
      real = len(batch["inputs"])
      inputs = np.pad(batch["inputs"], ((0, batch_size - real), (0, 0)))
      ids = sess.run(decode_graph.outputs, {decode_graph.inputs: inputs})
      targets += [text(vocabulary, t) for t in batch["targets"]]
      predictions += [text(vocabulary, p) for p in ids[:real]]
      if out:
        print("  decoded %d examples" % len(predictions), file=out,
              flush=True)
  return score(task, targets, predictions)


def score(task, targets, predictions):
  """The task's prediction metrics of decoded texts, after its
  postprocessor (as T5's evaluation scores them).

  Args:
    task: a seqio.Task.
    targets, predictions: lists of str.

  Returns:
    dict from metric name to value, and "examples": len(predictions).
  """
  targets = [task.postprocess_fn(t, example=None, is_target=True)
             for t in targets]
  predictions = [task.postprocess_fn(p, example=None, is_target=False)
                 for p in predictions]
  scores = {"examples": len(predictions)}
  for metric_fn in task.predict_metric_fns:
    scores.update(metric_fn(targets, predictions))
  return scores


def text(vocabulary, ids):
  """The text of ids up to the first EOS (1) or padding (0)."""
  ids = list(ids)
  for stop in (0, 1):
    if stop in ids:
      ids = ids[:ids.index(stop)]
  return vocabulary.decode(ids)
