"""Batches of seqio tasks for the CPU loops."""
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.training import data


def test_lm_task_inputs_are_the_targets_shifted_right():
  batches = data.task_batches("mtf_switch_default_lm", "validation", 4, 999,
                              32, repeat=False)
  batch = next(batches)
  assert batch["targets"].shape == batch["inputs"].shape == (4, 32)
  np.testing.assert_array_equal(batch["inputs"][:, 0], 0)
  np.testing.assert_array_equal(batch["inputs"][:, 1:],
                                batch["targets"][:, :-1])
  assert (batch["targets"] > 1).mean() > 0.9  # packed: little padding


def test_unshuffled_batches_repeat_exactly_and_skip_resumes_them():
  def first(n, skip=0):
    batches = data.task_batches("mtf_switch_default_span_corruption",
                                "train", 2, 32, 8, shuffle=False,
                                skip_batches=skip)
    return [next(batches)["inputs"] for _ in range(n)]
  run = first(5)
  np.testing.assert_array_equal(np.stack(run), np.stack(first(5)))
  np.testing.assert_array_equal(np.stack(run[3:]), np.stack(first(2, 3)))


def test_a_run_records_its_vocabulary_and_another_is_refused(tmp_path):
  model_dir = str(tmp_path)
  assert not data.check_vocabulary(model_dir, "mtf_switch_default_lm")
  data.write_vocabulary_record(model_dir, "mtf_switch_default_span_corruption")
  # Same SentencePiece model, another task: the same vocabulary.
  assert data.check_vocabulary(model_dir, "mtf_switch_default_lm")
  # The code corpus's vocabulary has the same size, not the same pieces.
  assert (data.vocab_size("mtf_switch_code_lm") ==
          data.vocab_size("mtf_switch_default_lm"))
  with pytest.raises(ValueError, match=r"another vocabulary \(Sentence"
                     r"PieceVocabulary, size 2100, of task mtf_switch_default_"
                     r"span_corruption\) than task mtf_switch_code_lm's"):
    data.check_vocabulary(model_dir, "mtf_switch_code_lm")


def test_batches_keep_to_a_graph_of_their_own_and_follow_its_seed():
  def first(seed):
    with tf.Graph().as_default() as graph:
      tf.set_random_seed(seed)
      batches = data.task_batches("mtf_switch_default_span_corruption",
                                  "train", 2, 32, 8, shuffle=True)
      batch = next(batches)
      # Nothing added to the default graph, nor left as the default.
      assert tf.get_default_graph() is graph
      assert not graph.get_operations()
    return batch["inputs"]
  np.testing.assert_array_equal(first(1), first(1))
  assert not np.array_equal(first(1), first(2))


def test_prefetching_keeps_the_batches_and_their_order():
  def first(n, prefetch_batches):
    with tf.Graph().as_default():
      tf.set_random_seed(3)
      batches = data.task_batches("mtf_switch_default_span_corruption",
                                  "train", 2, 32, 8, shuffle=True,
                                  skip_batches=2,
                                  prefetch_batches=prefetch_batches)
      return np.stack([next(batches)["inputs"] for _ in range(n)])
  # Span corruption draws its noise per example: made ahead on tf.data's
  # threads, the examples must be those made on demand.
  np.testing.assert_array_equal(first(6, 0), first(6, 4))
