"""End to end through T5's own `t5_mesh_transformer` (the console script T5
installs): train, evaluate, decode, resume, distill; and the drop-in
`mtf_switch.t5.mesh_transformer_main`'s non-finite guard."""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import helpers  # warning lines
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.training import local_servers


# T5's console script, beside this interpreter.
T5_BINARY = [os.path.join(os.path.dirname(sys.executable),
                          "t5_mesh_transformer")]
DROP_IN = [sys.executable, "-m", "mtf_switch.t5.mesh_transformer_main"]


class _T5Main:
  """A run of the binary, started at once (runs on the same trained model
  dir go two at a time: each is mostly one busy core)."""

  def __init__(self, model_dir, *args, binary=None,
               model="models/switch_tiny.gin"):
    command = (binary or T5_BINARY) + [
        "--model_dir=%s" % model_dir,
        "--module_import=mtf_switch.tasks",
        "--gin_file=dataset.gin",
        "--gin_file=%s" % model,
        "--gin_file=layouts/cpu_expert_data_2.gin",
        "--gin_param=MIXTURE_NAME = 'mtf_switch_copy_words'",
        "--gin_param=utils.run.sequence_length = "
        "{'inputs': 32, 'targets': 32}",
        "--gin_param=utils.run.batch_size = ('sequences_per_batch', 4)",
        "--gin_param=Bitransformer.decode.max_decode_length = 32",
    ] + list(args)
    # A file, not a pipe: a run waited for later must not block on its log.
    self._stderr = tempfile.TemporaryFile("w+")
    self._process = subprocess.Popen(
        command, cwd=os.path.dirname(model_dir), stdout=subprocess.DEVNULL,
        stderr=self._stderr, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))

  def wait(self):
    self._process.wait(timeout=900)

  def finish(self):
    """Waits for the run; returns its exit status and its log (absl logs
    to stderr)."""
    self.wait()
    self._stderr.seek(0)
    return self._process.returncode, self._stderr.read()

  def log(self):
    """The log of a run that must succeed, with no warning from
    mtf_switch's models (T5's, the Estimator's and mesh-tensorflow's own
    remain)."""
    returncode, log = self.finish()
    assert returncode == 0, log[-5000:]
    assert _warnings_of_mtf_switch(log) == []
    return log


def _warnings_of_mtf_switch(log):
  """The warning lines of a log that come from mtf_switch's models: a
  deprecated API called from mtf_switch's code, or a variable made without
  an initializer (mesh-tensorflow's relative attention biases, which it
  makes so, are dropped by mtf_switch.t5.quiet)."""
  return [line for line in helpers.warning_lines(log)
          if "/mtf_switch/" in line or "glorot_uniform_initializer" in line]


def _train(model_dir, steps, save_every=5):
  return _T5Main(model_dir, "--gin_param=utils.run.train_steps = %d" % steps,
                 "--gin_param=utils.run.save_checkpoints_steps = %d"
                 % save_every,
                 "--gin_param=utils.run.iterations_per_loop = %d"
                 % min(save_every, 100))


# Long enough to learn to copy most words (about 30 steps a second here; the
# cost of a run is its start-up and its saves, so it saves only twice).
TRAIN_STEPS = 1000


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
  """A model dir trained for TRAIN_STEPS steps through the binary
  (checkpoints at step 0 and TRAIN_STEPS), and what was in it then.

  Returns:
    (model_dir, {"latest": its latest checkpoint, "operative": its
     operative_config.gin}).
  """
  model_dir = str(tmp_path_factory.mktemp("t5_binary") / "model")
  _train(model_dir, TRAIN_STEPS, save_every=TRAIN_STEPS).log()
  with open(os.path.join(model_dir, "operative_config.gin")) as f:
    state = {"latest": tf.train.latest_checkpoint(model_dir),
             "operative": f.read()}
  return model_dir, state


@pytest.fixture(scope="module")
def runs(trained_dir):
  """The runs of the tests below on the trained model dir, two at a time:
  evaluation at steps 0 and TRAIN_STEPS and inference at TRAIN_STEPS, then
  the training resumed for 5 more steps and a distillation of the
  TRAIN_STEPS checkpoint (no run reads what another one writes).

  Returns:
    dict of _T5Main, waited for by the tests that use them.
  """
  model_dir, _ = trained_dir
  tmp_path = pathlib.Path(model_dir).parent
  inputs = tmp_path / "inputs.txt"
  inputs.write_text("switch expert router\nmesh tensor batch\n")
  # The resumed run saves its first step again as it starts: the
  # distillation reads its teacher from a copy of that checkpoint.
  teacher_dir = tmp_path / "teacher"
  teacher_dir.mkdir()
  for path in pathlib.Path(model_dir).glob("model.ckpt-%d.*" % TRAIN_STEPS):
    if not path.name.endswith(".meta"):
      shutil.copy(path, teacher_dir)
  started = {}
  started["eval"] = _T5Main(
      model_dir, "--gin_file=eval.gin",
      "--gin_param=utils.run.dataset_split = 'validation'",
      "--gin_param=utils.run.eval_checkpoint_step = [0, %d]" % TRAIN_STEPS)
  started["infer"] = _T5Main(
      model_dir, "--gin_file=infer.gin",
      "--gin_param=input_filename = '%s'" % inputs,
      "--gin_param=output_filename = '%s'" % (tmp_path / "decodes"),
      "--gin_param=infer_checkpoint_step = %d" % TRAIN_STEPS)
  for name in ("eval", "infer"):
    started[name].wait()
  started["resume"] = _train(model_dir, TRAIN_STEPS + 5)
  started["distill"] = _T5Main(
      str(tmp_path / "student"), "--gin_file=distill/dense_student.gin",
      "--gin_param=transformer.StudentTeacher.teacher_checkpoint = "
      "'%s'" % (teacher_dir / ("model.ckpt-%d" % TRAIN_STEPS)),
      "--gin_param=utils.run.train_steps = 5",
      "--gin_param=utils.run.iterations_per_loop = 5")
  for run in started.values():
    run.wait()
  return started


def _copied_share(predictions, targets):
  """The share of predicted words found in their line's target, counting
  whole words only (a line cut at the target length may end mid-word)."""
  found = total = 0
  for prediction, target in zip(predictions, targets):
    words = prediction.split()[:-1] or prediction.split()
    found += sum(word in target.split() for word in words)
    total += len(words)
  return found / max(total, 1)


def _metric(log, name, step):
  found = re.search(r"mtf_switch_copy_words/%s at step %d: ([\d.]+)"
                    % (name, step), log)
  assert found, log[-5000:]
  return float(found.group(1))


@pytest.mark.slow
def test_train_evaluate_decode_and_resume_through_the_t5_binary(
    trained_dir, runs):
  model_dir, state = trained_dir
  tmp_path = pathlib.Path(model_dir).parent
  assert state["latest"].endswith("model.ckpt-%d" % TRAIN_STEPS)
  assert "SwitchFeedForward.num_experts = %num_experts" in state["operative"]

  # Evaluation: the model learned to copy. Its decodes went from noise to
  # mostly the input's words, and T5's metrics saw it.
  log = runs["eval"].log()
  _metric(log, "sequence_accuracy", TRAIN_STEPS)
  assert (_metric(log, "mean_edit", TRAIN_STEPS)
          < _metric(log, "mean_edit", 0))
  eval_dir = tmp_path / "model" / "validation_eval"
  targets = (eval_dir / "mtf_switch_copy_words_targets").read_text()
  targets = targets.splitlines()
  assert len(targets) == 64
  shares = {}
  for step in (0, TRAIN_STEPS):
    predictions = (eval_dir / ("mtf_switch_copy_words_%d_predictions" % step)
                  ).read_text().splitlines()
    assert len(predictions) == 64
    shares[step] = _copied_share(predictions, targets)
  assert shares[0] < 0.2 and shares[TRAIN_STEPS] > 0.6, shares

  # Inference: one decode per input line, each its own input's words.
  runs["infer"].log()
  inputs = (tmp_path / "inputs.txt").read_text().splitlines()
  decodes = (tmp_path / ("decodes-%d" % TRAIN_STEPS)).read_text()
  decodes = decodes.splitlines()
  assert len(decodes) == len(inputs) and decodes[0] != decodes[1], decodes
  assert _copied_share(decodes, inputs) > 0.5, decodes

  log = runs["resume"].log()
  assert "Restoring parameters from %s/model.ckpt-%d" % (
      model_dir, TRAIN_STEPS) in log
  assert tf.train.latest_checkpoint(model_dir).endswith(
      "model.ckpt-%d" % (TRAIN_STEPS + 5))


@pytest.mark.slow
def test_distillation_through_the_t5_binary(trained_dir, runs):
  model_dir, _ = trained_dir
  # The last checkpoint of model_dir, copied (see `runs`).
  teacher_checkpoint = os.path.join(os.path.dirname(model_dir), "teacher",
                                    "model.ckpt-%d" % TRAIN_STEPS)
  student_dir = str(pathlib.Path(model_dir).parent / "student")
  runs["distill"].log()
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


@pytest.mark.slow
def test_a_non_finite_step_stops_the_run_naming_the_layer_before_saving_it(
    tmp_path):
  model_dir = str(tmp_path / "model")
  returncode, log = _T5Main(
      model_dir, "--gin_param=utils.run.train_steps = 20",
      "--gin_param=utils.run.save_checkpoints_steps = 1",
      "--gin_param=utils.run.iterations_per_loop = 1",
      "--gin_param=utils.run.learning_rate_schedule = 1e4",
      binary=DROP_IN).finish()
  assert returncode != 0
  found = re.search(r"non-finite (loss|router logits in \S+|gradient of "
                    r"\S+) at step\] \[(\d+)\]", log)
  assert found, log[-5000:]
  failed_step = int(found.group(2))
  assert failed_step < 20
  # Nothing was saved from the failed step, and every weight and slot saved
  # is finite (the weights are bfloat16, T5's default).
  latest = tf.train.latest_checkpoint(model_dir)
  assert int(latest.rsplit("-", 1)[1]) <= failed_step
  reader = tf.train.load_checkpoint(latest)
  dtypes = reader.get_variable_to_dtype_map()
  floats = [name for name, dtype in dtypes.items() if dtype.is_floating]
  assert any("slot" in name for name in floats)
  for name in floats:
    value = reader.get_tensor(name).astype(np.float32)
    assert np.isfinite(value).all(), name


@pytest.mark.slow
def test_skip_nonfinite_gin_skips_the_steps_of_a_diverging_run(tmp_path):
  model_dir = str(tmp_path / "model")
  steps = 20
  returncode, log = _T5Main(
      model_dir, "--gin_file=skip_nonfinite.gin",
      "--gin_param=utils.run.train_steps = %d" % steps,
      "--gin_param=utils.run.save_checkpoints_steps = 10",
      "--gin_param=utils.run.iterations_per_loop = 10",
      "--gin_param=utils.run.learning_rate_schedule = 1e4").finish()
  assert returncode == 0, log[-5000:]
  assert _warnings_of_mtf_switch(log) == []
  skipped = log.count(
      "\nnon-finite gradients: step skipped, weights unchanged\n")
  assert 0 < skipped < steps
  # The run reached its last step, and the skipped steps left nothing
  # non-finite behind.
  latest = tf.train.latest_checkpoint(model_dir)
  assert latest.endswith("model.ckpt-%d" % steps)
  reader = tf.train.load_checkpoint(latest)
  for name, dtype in reader.get_variable_to_dtype_map().items():
    if dtype.is_floating:
      assert np.isfinite(reader.get_tensor(name).astype(np.float32)).all()


@pytest.mark.slow
def test_the_drop_in_trains_on_a_cluster_and_names_a_task_that_is_down(
    tmp_path):
  """The drop-in's --cluster with layouts/cluster_expert_data_2.gin on 2
  local servers.  T5's runs are not reproducible here even in one process
  (two identical 4-step runs differ in their weights), so this checks the
  run, not its values: the session on the chief, a finished checkpoint
  that trained every weight; and, with task 1 down, a refusal naming it.
  tests/training/test_cluster.py checks the values, on the same lowering
  and layouts, against one process."""
  steps = 4
  flags = ["--gin_param=utils.run.train_steps = %d" % steps,
           "--gin_param=utils.run.save_checkpoints_steps = %d" % steps,
           "--gin_param=utils.run.iterations_per_loop = %d" % steps,
           "--gin_file=layouts/cluster_expert_data_2.gin"]
  (tmp_path / "up").mkdir()
  (tmp_path / "down").mkdir()
  model_dir = str(tmp_path / "up" / "model")
  with local_servers.LocalServers(2, threads=1) as servers:
    cluster_flag = "--cluster=%s" % ",".join(servers.cluster.addresses)
    log = _T5Main(model_dir, *flags, cluster_flag, binary=DROP_IN).log()
    assert "'_master': 'grpc://%s'" % servers.cluster.addresses[0] in log
    servers.kill(1)
    returncode, down_log = _T5Main(str(tmp_path / "down" / "model"), *flags,
                                   cluster_flag, binary=DROP_IN).finish()
  assert returncode != 0
  assert ("cluster task 1 (%s) is unreachable" % servers.cluster.addresses[1]
          in down_log), down_log[-3000:]
  first = tf.train.load_checkpoint(os.path.join(model_dir, "model.ckpt-0"))
  last = tf.train.load_checkpoint(os.path.join(model_dir,
                                               "model.ckpt-%d" % steps))
  weights = [n for n in last.get_variable_to_shape_map()
             if "slot" not in n and "step" not in n]
  assert any("SwitchFeedForward/wi" in n for n in weights)
  for name in weights:
    before = first.get_tensor(name).astype(np.float32)
    after = last.get_tensor(name).astype(np.float32)
    assert np.isfinite(after).all() and not np.array_equal(before, after), (
        name)


@pytest.mark.slow
def test_upcycling_through_the_t5_binary(tmp_path):
  """upcycle.gin: a dense_tiny run of T5's binary upcycled into
  switch_tiny, each expert starting as the dense FFN it replaces."""
  steps = ["--gin_param=utils.run.train_steps = 2",
           "--gin_param=utils.run.save_checkpoints_steps = 2",
           "--gin_param=utils.run.iterations_per_loop = 2"]
  dense_dir = str(tmp_path / "dense")
  _T5Main(dense_dir, *steps, model="models/dense_tiny.gin").log()
  switch_dir = str(tmp_path / "switch")
  log = _T5Main(switch_dir, *steps, "--gin_file=upcycle.gin",
                "--gin_param=DENSE_CHECKPOINT = '%s'" % dense_dir).log()
  upcycled = os.path.join(switch_dir, "upcycled", "model.ckpt-0")
  assert "upcycled %s/model.ckpt-2 into %s" % (dense_dir, upcycled) in log
  dense = tf.train.load_checkpoint(os.path.join(dense_dir, "model.ckpt-2"))
  start = tf.train.load_checkpoint(os.path.join(switch_dir, "model.ckpt-0"))
  ffn = "encoder/block_001/layer_001/DenseReluDense/wo/kernel"
  experts = start.get_tensor(
      "encoder/block_000/layer_003/SwitchFeedForward/wo/kernel")
  for expert in experts:
    np.testing.assert_array_equal(expert, dense.get_tensor(ffn))
  assert start.get_tensor("shared/embedding").tolist() == dense.get_tensor(
      "shared/embedding").tolist()
  # The routers are new, and the run trained on from there.
  assert start.has_tensor(
      "encoder/block_000/layer_003/SwitchFeedForward/router/kernel")
  assert tf.train.latest_checkpoint(switch_dir).endswith("model.ckpt-2")


@pytest.mark.slow
def test_dump_routes_reads_a_t5_binary_checkpoint(trained_dir, tmp_path):
  """dump_routes on T5's checkpoint (bfloat16 weights, read as float32):
  a trained copying model routes every real token of each layer."""
  model_dir, state = trained_dir
  out = str(tmp_path / "routes")
  done = subprocess.run(
      [sys.executable, "-m", "mtf_switch.training.dump_routes",
       "--model_dir", state["latest"], "--out", out, "--examples", "8",
       "--gin_file", "models/switch_tiny.gin", "--task",
       "mtf_switch_copy_words", "--input_length", "32", "--target_length",
       "32"], capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(out, "routes.tsv")) as f:
    rows = f.read().splitlines()[1:]
  layers = {row.split("\t")[5] for row in rows}
  assert layers == {"encoder/block_000/layer_003/SwitchFeedForward",
                    "decoder/block_000/layer_005/SwitchFeedForward"}
  # A trained router spreads the tokens over more than one expert.
  assert len({row.split("\t")[7] for row in rows}) > 1
