"""mtf_switch.t5.checkpoint_check on small checkpoints written here."""
import os

import helpers  # noqa: F401  (graph mode, compat shim)
import pytest
import seqio
import tensorflow.compat.v1 as tf

from mtf_switch.t5 import checkpoint_check
from mtf_switch.training import data

TASK = "mtf_switch_default_span_corruption"
EMBEDDING = "shared/embedding"
WEIGHT = "encoder/block_000/layer_000/SelfAttention/q"


def _save(model_dir, dtype=tf.float32, embedding_shape=(16, 4)):
  """A checkpoint of two weights in `dtype`, an Adafactor slot in float32
  and an int64 step, as the main job (float32) or T5 (bfloat16 weights)
  writes them; returns its path."""
  with tf.Graph().as_default():
    tf.get_variable(EMBEDDING, embedding_shape, dtype)
    tf.get_variable(WEIGHT, [4, 4], dtype)
    tf.get_variable(WEIGHT + "_slot_v", [4, 4], tf.float32)
    step = tf.train.get_or_create_global_step()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      return tf.train.Saver().save(
          sess, os.path.join(model_dir, "model.ckpt"),
          global_step=sess.run(step))


def _vocabulary(task):
  return seqio.get_mixture_or_task(task).output_features["targets"].vocabulary


def test_a_float32_checkpoint_read_as_bfloat16_names_the_binding(tmp_path):
  checkpoint = _save(str(tmp_path))
  with pytest.raises(checkpoint_check.CheckpointMismatchError) as error:
    checkpoint_check.check_master_dtype(checkpoint, tf.bfloat16)
  message = str(error.value)
  assert 'utils.get_variable_dtype.master_dtype = "float32"' in message
  assert "--gin_file=from_main_job.gin" in message
  assert checkpoint in message and "and 1 more" in message
  # The step is an int64 in every checkpoint: not a weight to compare.
  checkpoint_check.check_master_dtype(checkpoint, tf.float32)


def test_t5s_own_checkpoint_reads_with_its_default(tmp_path):
  # bfloat16 weights, float32 Adafactor slots (mesh-tensorflow makes slots
  # float32 whatever the master dtype).
  checkpoint = _save(str(tmp_path), tf.bfloat16)
  checkpoint_check.check_master_dtype(checkpoint, tf.bfloat16)
  with pytest.raises(checkpoint_check.CheckpointMismatchError,
                     match='master_dtype = "bfloat16"'):
    checkpoint_check.check_master_dtype(checkpoint, tf.float32)


def test_a_bfloat16_checkpoint_read_as_float32_names_t5s_default(tmp_path):
  checkpoint = _save(str(tmp_path), tf.bfloat16)
  with pytest.raises(checkpoint_check.CheckpointMismatchError) as error:
    checkpoint_check.check_dtypes(checkpoint, {WEIGHT: tf.float32,
                                               "not/in/checkpoint": tf.int32})
  message = str(error.value)
  assert 'utils.get_variable_dtype.master_dtype = "bfloat16"' in message
  assert "leave out from_main_job.gin" in message
  checkpoint_check.check_dtypes(checkpoint, {WEIGHT: tf.bfloat16})


def test_another_model_names_the_checkpoints_gin_config(tmp_path):
  checkpoint = _save(str(tmp_path))
  operative = os.path.join(str(tmp_path), "operative_config.gin")
  with pytest.raises(checkpoint_check.CheckpointMismatchError) as error:
    checkpoint_check.check_shapes(checkpoint, {EMBEDDING: [16, 8],
                                               WEIGHT: [4, 4]})
  message = str(error.value)
  assert "%s is [16, 4] there, [16, 8] here" % EMBEDDING in message
  assert "--gin_file=%s" % operative in message
  # A variable the checkpoint lacks fails a restore of every variable, not
  # a fine-tuning run's (init_checkpoint restores those it finds).
  shapes = {EMBEDDING: [16, 4], "decoder/new/kernel": [4, 4]}
  checkpoint_check.check_shapes(checkpoint, shapes, restores_all=False)
  with pytest.raises(checkpoint_check.CheckpointMismatchError,
                     match="1 variables missing there .decoder/new/kernel"):
    checkpoint_check.check_shapes(checkpoint, shapes, restores_all=True)


def test_another_vocabulary_names_the_task_of_the_checkpoint(tmp_path):
  checkpoint = _save(str(tmp_path))
  # Nothing recorded: only the embedding's shape can tell.
  checkpoint_check.check_vocabulary(checkpoint,
                                    _vocabulary("mtf_switch_copy_words"))
  data.write_vocabulary_record(str(tmp_path), TASK)
  checkpoint_check.check_vocabulary(checkpoint, _vocabulary(TASK))
  checkpoint_check.check_vocabulary(checkpoint, None)
  with pytest.raises(checkpoint_check.CheckpointMismatchError) as error:
    checkpoint_check.check_vocabulary(
        checkpoint, (_vocabulary(TASK), _vocabulary("mtf_switch_copy_words")))
  message = str(error.value)
  assert "MIXTURE_NAME = %r" % TASK in message
  assert "ByteVocabulary, 259 ids" in message


def test_outside_t5s_binary_no_checkpoint_is_checked_in_the_graph(tmp_path):
  # The main job, MtfModel and the tests build the same models: only T5's
  # binary (its flags parsed) checks them against its checkpoint.
  assert checkpoint_check.checkpoint_t5_binary_reads() == (None, False)
