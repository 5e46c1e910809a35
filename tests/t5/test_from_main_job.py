"""A checkpoint of the main job read by T5 with gin/from_main_job.gin:
scored by MtfModel and evaluated by T5's binary as the main job's own
evaluation code scores the same examples, fine-tuned by MtfModel; without
the gin file, the failure names the binding to add, before T5 restores
anything."""
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile

import gin
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np
import pytest
import seqio
import tensorflow.compat.v1 as tf

from mtf_switch import models
import mtf_switch.tasks  # noqa: F401  (registers the task)
from mtf_switch.t5 import checkpoint_check
from mtf_switch.t5 import mtf_model
from mtf_switch.training import checkpoints
from mtf_switch.training import data
from mtf_switch.training import loop
from mtf_switch.training import step

pytestmark = pytest.mark.slow

# The main job's defaults: its task, lengths and batch size; a mesh of two
# positions with the experts on the batch's axis (the main job trains on
# one device; a checkpoint holds whole variables, read under any mesh).
TASK = "mtf_switch_default_span_corruption"
MESH_SHAPE = "batch:2"
LAYOUT = "batch:batch;experts:batch"
LENGTHS = {"inputs": 64, "targets": 16}
BATCH_SIZE = 16
# As many batches as the main job's validation loss averages over
# (`mtf_switch.training.loop.evaluate_task`).
EVAL_BATCHES = 20
STEPS = 4
T5_BINARY = [os.path.join(os.path.dirname(sys.executable),
                          "t5_mesh_transformer")]
DROP_IN = [sys.executable, "-m", "mtf_switch.t5.mesh_transformer_main"]
# T5 and the main job compute in float32 from the same float32 weights and
# token ids; they differ in the order of their sums (measured: 1e-7
# relative, bit-equal one example at a time).  Weights read as bfloat16
# (3 significant digits), another checkpoint or other examples are off by
# 1e-3 or more.
RTOL = 1e-5


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
  """The model dir of a main-job run of STEPS steps with its defaults."""
  model_dir = str(tmp_path_factory.mktemp("from_main_job") / "main")
  result = subprocess.run(
      [sys.executable, "-m", "mtf_switch.training.train",
       "--model_dir", model_dir, "--steps", str(STEPS),
       "--log_every", str(STEPS), "--save_every", str(STEPS)],
      capture_output=True, text=True, timeout=900,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


@pytest.fixture(scope="module")
def main_job_evaluation(main_job):
  """The main job's own evaluation of the validation examples that T5
  reads with from_main_job.gin: its model (from the run's operative
  config), evaluation step graph, checkpoint restore and `log_likelihood`,
  on the split's first EVAL_BATCHES batches as its data code draws them
  with seed 0 (no graph-level seed: T5's input graph has none).

  Returns:
    dict: "texts" (the targets), "tokens" (their number), "batch_sums"
    (the summed log-likelihood of each batch's targets), "mean" (per
    token).
  """
  gin.clear_config()
  gin.parse_config_file(os.path.join(main_job, "operative_config.gin"))
  model = models.make_model(data.vocab_size(TASK), MESH_SHAPE, LAYOUT)
  step_graph = step.build_step_graph(
      model, BATCH_SIZE, LENGTHS["inputs"], LENGTHS["targets"], MESH_SHAPE,
      LAYOUT, train=False)
  gin.clear_config()
  with tf.Graph().as_default():
    batches = list(itertools.islice(
        data.task_batches(TASK, "validation", BATCH_SIZE, LENGTHS["inputs"],
                          LENGTHS["targets"], repeat=False), EVAL_BATCHES))
  sess, checkpoint = checkpoints.start_session(step_graph, main_job)
  assert checkpoint.endswith("model.ckpt-%d" % STEPS)
  with sess:
    batch_sums = [
        sess.run(step_graph.token_log_likelihood,
                 {step_graph.inputs: b["inputs"],
                  step_graph.targets: b["targets"]}) for b in batches]
    mean = loop.log_likelihood(sess, step_graph, iter(batches))
  vocabulary = _vocabulary()
  return {"texts": [vocabulary.decode(t.tolist())
                    for b in batches for t in b["targets"]],
          "tokens": sum(int((b["targets"] != 0).sum()) for b in batches),
          "batch_sums": np.array(batch_sums), "mean": mean}


def _vocabulary():
  return seqio.get_mixture_or_task(TASK).output_features["targets"].vocabulary


def _model(model_dir, **kwargs):
  return mtf_model.MtfModel(
      model_dir, mesh_shape=MESH_SHAPE, layout_rules=LAYOUT,
      batch_size=BATCH_SIZE, sequence_length=LENGTHS, **kwargs)


def test_mtf_model_scores_as_the_main_job_evaluates(main_job,
                                                    main_job_evaluation):
  gin.parse_config_file("from_main_job.gin")
  gin.parse_config("mesh_eval_dataset_fn.num_eval_examples = %d"
                   % (EVAL_BATCHES * BATCH_SIZE))
  scores, scored = _model(main_job).score(
      mixture_or_task_name=TASK, mixture_or_task_split="validation",
      vocabulary=_vocabulary())
  # The same examples, in the same order.
  assert list(scored) == main_job_evaluation["texts"]
  scores = np.array(scores)
  assert np.isfinite(scores).all() and (scores < 0).all()
  np.testing.assert_allclose(
      scores.reshape(EVAL_BATCHES, BATCH_SIZE).sum(axis=1),
      main_job_evaluation["batch_sums"], rtol=RTOL)


def test_mtf_model_without_from_main_job_gin_names_the_binding(main_job):
  with pytest.raises(checkpoint_check.CheckpointMismatchError) as error:
    _model(main_job).score(inputs=["one two"], targets=["two"],
                            vocabulary=_vocabulary())
  message = str(error.value)
  assert 'utils.get_variable_dtype.master_dtype = "float32"' in message
  assert "from_main_job.gin" in message


class _Run:
  """A run of T5's binary (or the drop-in) on a copy of the main job's
  model dir, started at once; its log in a file, not a pipe (a run waited
  for later must not block on it)."""

  def __init__(self, binary, model_dir, copy_to, *gin_files):
    shutil.copytree(model_dir, copy_to)
    self._log = tempfile.TemporaryFile("w+")
    self._process = subprocess.Popen(
        binary + [
            "--model_dir=%s" % copy_to, "--module_import=mtf_switch.tasks",
            "--gin_file=dataset.gin",
            "--gin_file=%s" % os.path.join(copy_to, "operative_config.gin"),
            "--gin_file=perplexity_eval.gin",
        ] + ["--gin_file=%s" % f for f in gin_files] + [
            "--gin_param=MIXTURE_NAME = %r" % TASK,
            "--gin_param=utils.run.mesh_shape = %r" % MESH_SHAPE,
            "--gin_param=utils.run.layout_rules = %r" % LAYOUT,
            "--gin_param=utils.run.sequence_length = %r" % LENGTHS,
            "--gin_param=utils.run.batch_size = ('sequences_per_batch', %d)"
            % BATCH_SIZE,
            "--gin_param=utils.run.dataset_split = 'validation'",
            "--gin_param=utils.run.perplexity_eval_steps = %d"
            % EVAL_BATCHES,
            "--gin_param=eval_checkpoint_step = -1",
        ], stdout=subprocess.DEVNULL, stderr=self._log, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))

  def finish(self):
    """Waits; returns the exit status and the log (absl logs to stderr)."""
    self._process.wait(timeout=900)
    self._log.seek(0)
    return self._process.returncode, self._log.read()


def _eval_metric(log, name):
  found = re.search(r"Saving dict for global step %d: .*\b%s = (-?[\d.]+)"
                    % (STEPS, name), log)
  assert found, log[-5000:]
  return float(found.group(1))


def test_t5_binary_evaluates_it_as_the_main_job_and_names_the_binding(
    main_job, main_job_evaluation, tmp_path):
  # Both at once (each mostly one busy core): T5's own binary with the gin
  # file, the drop-in without it.
  with_gin = _Run(T5_BINARY, main_job, str(tmp_path / "with"),
                  "from_main_job.gin")
  without = _Run(DROP_IN, main_job, str(tmp_path / "without"))

  returncode, log = with_gin.finish()
  assert returncode == 0, log[-5000:]
  assert _eval_metric(log, "num_eval_tokens") == main_job_evaluation["tokens"]
  assert _eval_metric(log, "neg_log_perplexity") == pytest.approx(
      main_job_evaluation["mean"], rel=RTOL)

  returncode, log = without.finish()
  assert returncode != 0
  assert "CheckpointMismatchError" in log, log[-5000:]
  assert 'utils.get_variable_dtype.master_dtype = "float32"' in log
  # Stopped while building the graph, before T5 restored anything.
  assert "Restoring parameters" not in log


def test_mtf_model_finetunes_from_the_checkpoints_weights(main_job, tmp_path):
  model_dir = main_job
  finetuned_dir = str(tmp_path / "finetuned")
  gin.parse_config_file("from_main_job.gin")
  _model(finetuned_dir, learning_rate_schedule=0.001,
         save_checkpoints_steps=2, iterations_per_loop=2).finetune(
             TASK, finetune_steps=2, pretrained_model_dir=model_dir)
  assert tf.train.latest_checkpoint(finetuned_dir).endswith(
      "model.ckpt-%d" % (STEPS + 2))
  pretrained = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  # T5 saves the state it starts from: the main job's weights, Adafactor
  # slots and step, in float32.
  start = tf.train.load_checkpoint(
      os.path.join(finetuned_dir, "model.ckpt-%d" % STEPS))
  names = pretrained.get_variable_to_shape_map()
  assert any("slot" in name for name in names)
  for name in names:
    np.testing.assert_array_equal(start.get_tensor(name),
                                  pretrained.get_tensor(name), err_msg=name)
  assert start.get_variable_to_dtype_map()["shared/embedding"] == tf.float32
  # ... and trained on from there.
  end = tf.train.load_checkpoint(tf.train.latest_checkpoint(finetuned_dir))
  assert not np.array_equal(end.get_tensor("shared/embedding"),
                            pretrained.get_tensor("shared/embedding"))
  # The fine-tuned model dir records its dtype: T5 reads it without the
  # gin file.
  with open(os.path.join(finetuned_dir, "operative_config.gin")) as f:
    assert "get_variable_dtype.master_dtype = 'float32'" in f.read()
