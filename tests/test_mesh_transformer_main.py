"""End to end through T5's binary flags: train, evaluate, decode, resume."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf


def _t5_main(model_dir, *args):
  command = [
      sys.executable, "-m", "mtf_switch.mesh_transformer_main",
      "--model_dir=%s" % model_dir,
      "--module_import=mtf_switch.tasks",
      "--gin_file=dataset.gin",
      "--gin_file=models/switch_tiny.gin",
      "--gin_file=layouts/cpu_expert_data_2.gin",
      "--gin_param=MIXTURE_NAME = 'mtf_switch_copy_words'",
      "--gin_param=utils.run.sequence_length = "
      "{'inputs': 32, 'targets': 32}",
      "--gin_param=utils.run.batch_size = ('sequences_per_batch', 4)",
      "--gin_param=Bitransformer.decode.max_decode_length = 32",
  ] + list(args)
  result = subprocess.run(
      command, cwd=os.path.dirname(model_dir), capture_output=True, text=True,
      timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-5000:]
  return result.stderr  # absl logs to stderr


def _train(model_dir, steps):
  return _t5_main(model_dir, "--gin_param=utils.run.train_steps = %d" % steps,
                  "--gin_param=utils.run.save_checkpoints_steps = 5",
                  "--gin_param=utils.run.iterations_per_loop = 5")


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
  """A model dir trained for 10 steps through the binary (the tests below
  share it; the first resumes it to step 15)."""
  model_dir = str(tmp_path_factory.mktemp("t5_binary") / "model")
  _train(model_dir, 10)
  return model_dir


@pytest.mark.slow
def test_train_evaluate_decode_and_resume_through_the_t5_binary(trained_dir):
  model_dir = trained_dir
  tmp_path = pathlib.Path(model_dir).parent
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-10")
  operative = open(os.path.join(model_dir, "operative_config.gin")).read()
  assert "SwitchFeedForward.num_experts = %num_experts" in operative

  log = _t5_main(model_dir, "--gin_file=eval.gin",
                 "--gin_param=utils.run.dataset_split = 'validation'",
                 "--gin_param=utils.run.eval_checkpoint_step = 10")
  assert "mtf_switch_copy_words/sequence_accuracy at step 10" in log
  predictions = tmp_path / "model" / "validation_eval" / (
      "mtf_switch_copy_words_10_predictions")
  assert len(predictions.read_text().splitlines()) == 64

  inputs = tmp_path / "inputs.txt"
  inputs.write_text("switch expert router\nmesh tensor batch\n")
  _t5_main(model_dir, "--gin_file=infer.gin",
           "--gin_param=input_filename = '%s'" % inputs,
           "--gin_param=output_filename = '%s'" % (tmp_path / "decodes"),
           "--gin_param=infer_checkpoint_step = 10")
  decodes = (tmp_path / "decodes-10").read_text().splitlines()
  assert len(decodes) == 2

  log = _train(model_dir, 15)
  assert "Restoring parameters from %s/model.ckpt-10" % model_dir in log
  assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-15")


@pytest.mark.slow
def test_distillation_through_the_t5_binary(trained_dir, tmp_path):
  teacher_checkpoint = os.path.join(trained_dir, "model.ckpt-10")
  student_dir = str(tmp_path / "student")
  _t5_main(student_dir, "--gin_file=distill/dense_student.gin",
           "--gin_param=transformer.StudentTeacher.teacher_checkpoint = "
           "'%s'" % teacher_checkpoint,
           "--gin_param=utils.run.train_steps = 5",
           "--gin_param=utils.run.iterations_per_loop = 5")
  teacher = tf.train.load_checkpoint(teacher_checkpoint)
  student = tf.train.load_checkpoint(tf.train.latest_checkpoint(student_dir))
  names = student.get_variable_to_shape_map()
  # The student is the dense twin: its Switch layers became dense FFNs.
  assert not [n for n in names if n.startswith("student/")
              and "SwitchFeedForward" in n]
  assert "student/encoder/block_000/layer_003/DenseReluDense/wi/kernel" in (
      names)
  # The teacher is frozen at its checkpoint.
  for name in teacher.get_variable_to_shape_map():
    if "slot" not in name and name != "global_step":
      np.testing.assert_array_equal(student.get_tensor("teacher/" + name),
                                    teacher.get_tensor(name))
  # The student started from the teacher's non-expert weights: after five
  # steps it is still close to them (an independent init would be as far
  # from them as they are large, relative distance about 1.4).
  embedding = teacher.get_tensor("shared/embedding")
  moved = np.linalg.norm(student.get_tensor("student/shared/embedding")
                         - embedding) / np.linalg.norm(embedding)
  assert moved < 0.3
