"""Numpy batches of a seqio task, for the CPU training and evaluation loops."""
import seqio
import tensorflow_datasets as tfds

from mtf_switch import tasks


def task_batches(task_name, split, batch_size, input_length, target_length,
                 repeat=True, skip_batches=0, seed=0):
  """Numpy {"inputs", "targets"} batches of a seqio task, padded.

  Args:
    task_name: a registered seqio task or mixture.
    split: "train" or "validation".
    batch_size, input_length, target_length: ints.
    repeat: loop over the split forever (shuffled) or once (in order).
    skip_batches: batches to skip (a resumed run continues the data).
    seed: shuffle seed.

  Returns:
    iterator of dicts of int32 [batch_size, length] arrays; 0 is padding.
  """
  lengths = {"inputs": input_length, "targets": target_length}
  dataset = tasks.get_task_or_mixture(task_name).get_dataset(
      lengths, split=split, shuffle=repeat, seed=seed, use_cached=False,
      try_in_mem_cache=False, num_epochs=None if repeat else 1)
  dataset = seqio.utils.trim_and_pad_dataset(
      dataset.map(lambda ex: {k: ex[k] for k in lengths}), lengths)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  return iter(tfds.as_numpy(dataset.skip(skip_batches)))


def vocab_size(task_name):
  """The size of the task's target vocabulary."""
  task = tasks.get_task_or_mixture(task_name)
  return task.output_features["targets"].vocabulary.vocab_size
