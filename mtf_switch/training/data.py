"""Numpy batches of a seqio task, for the CPU training and evaluation loops;
the record of a run's vocabulary."""
import hashlib
import json
import os

import numpy as np
import seqio
import tensorflow.compat.v1 as tf

from mtf_switch import tasks


def task_batches(task_name, split, batch_size, input_length, target_length,
                 repeat=True, skip_batches=0, seed=0, shuffle=None,
                 shuffle_buffer_size=None, drop_remainder=True,
                 prefetch_batches=2):
  """Numpy {"inputs", "targets"} batches of a seqio task, padded.

  A task without an "inputs" feature is a decoder-only language model's:
  its inputs are its targets shifted right by one (0 first), and
  input_length is ignored.

  Args:
    task_name: a registered seqio task or mixture.
    split: "train" or "validation".
    batch_size, input_length, target_length: ints.
    repeat: loop over the split forever or once.
    skip_batches: batches to skip (a resumed run continues the data).
    seed: shuffle seed.
    shuffle: shuffle the examples; default: when repeating.
    shuffle_buffer_size: examples in the shuffle buffer; default the task's
      (seqio: 1000).  A long document makes many consecutive examples, so
      a buffer of a few documents' examples leaves batches correlated.
    drop_remainder: drop a last, smaller batch (training); False keeps it
      (evaluating every example).
    prefetch_batches: batches that tf.data's threads make ahead, while the
      caller's step runs; 0 makes each batch when it is asked for
      (benchmarks/peer_hf.py times the main job both ways).

  Returns:
    iterator of dicts of int32 [batch_size, length] arrays; 0 is padding.
  """
  task = tasks.get_task_or_mixture(task_name)
  lm = is_language_model(task_name)
  lengths = {"targets": target_length}
  if not lm:
    lengths["inputs"] = input_length
  # A graph and session of their own, whatever graph is the default: a
  # session places its whole graph, and a step graph on a multi-device mesh
  # names devices that a data session does not have.  The default graph's
  # seed carries over: with the shuffle's op seed it sets the order (so a
  # run's seed sets its data order, as when the data shared its graph).
  graph_seed = tf.get_default_graph().seed
  with tf.Graph().as_default():
    if graph_seed is not None:
      tf.set_random_seed(graph_seed)
    dataset = task.get_dataset(
        lengths, split=split, shuffle=repeat if shuffle is None else shuffle,
        seed=seed, use_cached=False, try_in_mem_cache=False,
        num_epochs=None if repeat else 1,
        shuffle_buffer_size=shuffle_buffer_size)
    dataset = seqio.utils.trim_and_pad_dataset(
        dataset.map(lambda ex: {k: ex[k] for k in lengths}), lengths)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.skip(skip_batches)
    if prefetch_batches:
      dataset = dataset.prefetch(prefetch_batches)
    batches = _numpy_elements(dataset)
  return map(_with_shifted_inputs, batches) if lm else batches


def _numpy_elements(dataset):
  """The elements of `dataset` (built in the default graph) as numpy, read
  by a session of that graph; unlike tfds.as_numpy's generator, this one
  does not hold its graph as the default between elements."""
  element = tf.data.make_one_shot_iterator(dataset).get_next()
  sess = tf.Session()
  sess.run(tf.tables_initializer())

  def elements():
    try:
      while True:
        yield sess.run(element)
    except tf.errors.OutOfRangeError:
      return
    finally:
      sess.close()
  return elements()


def _with_shifted_inputs(batch):
  """{"targets"} -> {"inputs", "targets"}: inputs[t] = targets[t - 1]."""
  targets = batch["targets"]
  inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
  return {"inputs": inputs, "targets": targets}


def is_language_model(task_name):
  """Whether the task has targets only (a decoder-only LM's task)."""
  task = tasks.get_task_or_mixture(task_name)
  return "inputs" not in task.output_features


def step_lengths(task_name, input_length, target_length):
  """(input_length, target_length) of a step graph for the task: an LM's
  inputs are as long as its targets."""
  if is_language_model(task_name):
    return target_length, target_length
  return input_length, target_length


def vocab_size(task_name):
  """The size of the task's target vocabulary."""
  task = tasks.get_task_or_mixture(task_name)
  return task.output_features["targets"].vocabulary.vocab_size


VOCABULARY_RECORD = "vocabulary.json"


def vocabulary_identity(vocabulary):
  """What identifies a vocabulary: its class, size and a SHA-256 of its
  model (a SentencePiece model's bytes), not its path."""
  model = getattr(vocabulary, "sp_model", None) or b""
  return {"class": type(vocabulary).__name__,
          "vocab_size": vocabulary.vocab_size,
          "sha256": hashlib.sha256(model).hexdigest()}


def vocabulary_record(task_name):
  """The identity of the task's target vocabulary (`vocabulary_identity`)
  and the task's name."""
  vocabulary = tasks.get_task_or_mixture(task_name).output_features[
      "targets"].vocabulary
  return dict(vocabulary_identity(vocabulary), task=task_name)


def write_vocabulary_record(model_dir, task_name):
  """Writes model_dir/vocabulary.json (what check_vocabulary compares)."""
  with tf.io.gfile.GFile(os.path.join(model_dir, VOCABULARY_RECORD),
                         "w") as f:
    f.write(json.dumps(vocabulary_record(task_name), indent=1,
                       sort_keys=True))


def check_vocabulary(model_dir, task_name):
  """Checks that a run in model_dir used the task's vocabulary.

  Returns:
    False if model_dir has no vocabulary record (a checkpoint made
    elsewhere: only its shapes can be checked), True if it matches.

  Raises:
    ValueError: naming both vocabularies, if they differ.
  """
  path = os.path.join(model_dir, VOCABULARY_RECORD)
  if not tf.io.gfile.exists(path):
    return False
  with tf.io.gfile.GFile(path) as f:
    recorded = json.load(f)
  here = vocabulary_record(task_name)
  keys = ("class", "vocab_size", "sha256")
  if any(recorded.get(k) != here[k] for k in keys):
    raise ValueError(
        "the checkpoint in %s was trained with another vocabulary (%s, "
        "size %s, of task %s) than task %s's (%s, size %d); fine-tune on a "
        "task with the pre-training vocabulary"
        % (model_dir, recorded.get("class"), recorded.get("vocab_size"),
           recorded.get("task"), task_name, here["class"],
           here["vocab_size"]))
  return True
