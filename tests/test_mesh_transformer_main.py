"""End to end through T5's binary flags: train, evaluate, decode, resume."""
import os
import subprocess
import sys

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


@pytest.mark.slow
def test_train_evaluate_decode_and_resume_through_the_t5_binary(tmp_path):
  model_dir = str(tmp_path / "model")
  _train(model_dir, 10)
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
