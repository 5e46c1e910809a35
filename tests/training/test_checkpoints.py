"""Checkpoints: saved master weights restore on any mesh; fine-tuning
restores the weights only; a moved dir with a corrupt latest checkpoint
resumes from the newest intact one, also after a kill inside a save."""
import io
import os
import shutil
import signal
import subprocess
import sys

import gin
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np
import pytest

from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import step as step_lib


def test_checkpoint_restores_the_same_weights_on_another_mesh(tmp_path):
  """Checkpoints hold master weights: a 2-device run resumes a 1-device one
  with identical evaluation."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  tokens = np.random.RandomState(0).randint(2, 32, (4, 8)).astype(np.int32)

  def step_graph(mesh_shape, layout, train_mode):
    model = models.make_bitransformer(32, mesh_shape, layout)
    return step_lib.build_step_graph(model, 4, 8, 8, mesh_shape, layout,
                                     train=train_mode)

  def weights(sess, step):
    return dict(zip([w.op.name for w in step.weights],
                    sess.run(step.weights)))

  def evaluate(mesh_shape, layout, model_dir):
    step = step_graph(mesh_shape, layout, False)
    sess, _ = checkpoints.start_session(step, model_dir)
    with sess:
      return sess.run(step.token_log_likelihood,
                      {step.inputs: tokens, step.targets: tokens}), weights(
                          sess, step)

  step = step_graph("", "", True)
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    for _ in range(3):
      sess.run(step.train_op, {step.inputs: tokens, step.targets: tokens})
    checkpoints.save(sess, step, str(tmp_path))
    saved = weights(sess, step)
  untrained, _ = evaluate("", "", None)
  one_device, _ = evaluate("", "", str(tmp_path))
  # Batch unsplit, so the groups (and the capacity) are those of one device.
  four_devices, restored = evaluate("expert:2,model:2",
                                    "experts:expert;d_ff:model;heads:model",
                                    str(tmp_path))
  assert one_device > untrained
  np.testing.assert_allclose(four_devices, one_device, rtol=1e-5)
  # The 4-device session holds exactly the weights the saving session had.
  assert sorted(restored) == sorted(saved)
  for name, value in saved.items():
    np.testing.assert_array_equal(restored[name], value, err_msg=name)


def test_restore_weights_starts_a_new_run_from_another_runs_weights(tmp_path):
  """Fine-tuning's start: the weights come over, the optimizer slots and
  the step do not; a checkpoint of another shape or none at all is refused
  by name."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  tokens = np.random.RandomState(0).randint(2, 32, (4, 8)).astype(np.int32)
  feed = lambda step: {step.inputs: tokens, step.targets: tokens}  # noqa

  def train_graph():
    return step_lib.build_step_graph(models.make_bitransformer(32), 4, 8, 8)

  pretrain = train_graph()
  sess, _ = checkpoints.start_session(pretrain, None)
  with sess:
    for _ in range(3):
      sess.run(pretrain.train_op, feed(pretrain))
    checkpoints.save(sess, pretrain, str(tmp_path))
    pretrained = sess.run(pretrain.weights)
    pretrained_loss = sess.run(pretrain.loss, feed(pretrain))

  finetune = train_graph()
  sess, _ = checkpoints.start_session(finetune, None)
  with sess:
    checkpoints.restore_weights(
        sess, finetune, checkpoints.resolve(str(tmp_path)),
        checkpoints.same_names(finetune))
    for got, want in zip(sess.run(finetune.weights), pretrained):
      np.testing.assert_array_equal(got, want)
    slots = [v for v in finetune.graph.get_collection("variables")
             if "_slot_" in v.op.name]
    assert slots and not any(np.any(s) for s in sess.run(slots))
    assert sess.run(finetune.global_step) == 0
    # The slices the step computes with hold the weights, too.
    np.testing.assert_allclose(sess.run(finetune.loss, feed(finetune)),
                               pretrained_loss, rtol=1e-5)

  gin.parse_config("mtf_switch.SwitchFeedForward.hidden_size = 48")
  wider = train_graph()
  with pytest.raises(ValueError, match=r"model.ckpt-3 does not fit this "
                     r"model: .*SwitchFeedForward/.* is \[.*\] there"):
    checkpoints.check_weights(checkpoints.resolve(str(tmp_path)),
                              checkpoints.same_names(wider))
  with pytest.raises(ValueError, match=r"no checkpoint at '.*empty'"):
    checkpoints.resolve(str(tmp_path / "empty"))


def _tiny_switch_step():
  """The training step of a tiny Switch model, and a batch for it."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  tokens = np.random.RandomState(0).randint(2, 32, (4, 8)).astype(np.int32)
  return (step_lib.build_step_graph(models.make_bitransformer(32), 4, 8, 8),
          tokens)


def test_a_moved_dir_with_a_corrupt_latest_checkpoint_falls_back(tmp_path):
  step, tokens = _tiny_switch_step()
  original = tmp_path / "run"
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    saved = {}
    for _ in range(3):
      sess.run(step.train_op, {step.inputs: tokens, step.targets: tokens})
      path = checkpoints.save(sess, step, str(original))
      saved[path.rsplit("-", 1)[1]] = sess.run(step.weights[0])
  moved = tmp_path / "moved"
  shutil.move(str(original), str(moved))  # the state file must not matter
  data = next(moved.glob("model.ckpt-3.data-*"))
  data.write_bytes(data.read_bytes()[:100])  # a truncated copy
  messages = io.StringIO()
  sess, restored = checkpoints.start_session(step, str(moved), out=messages)
  with sess:
    assert restored == str(moved / "model.ckpt-2")
    assert sess.run(step.global_step) == 2
    np.testing.assert_array_equal(sess.run(step.weights[0]), saved["2"])
  assert "model.ckpt-3 is unreadable" in messages.getvalue()
  assert "trying %s" % (moved / "model.ckpt-2") in messages.getvalue()

  for data in moved.glob("model.ckpt-*.data-*"):
    data.write_bytes(b"")
  with pytest.raises(ValueError, match="no checkpoint in .*moved is readable"):
    checkpoints.start_session(step, str(moved), out=io.StringIO())


def test_a_run_dir_given_as_a_relative_path_resumes(tmp_path, monkeypatch):
  """The main job's default model dir is relative (runs/switch_tiny)."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(models.make_bitransformer(32), 4, 8, 8)
  monkeypatch.chdir(tmp_path)
  os.makedirs("runs/relative")
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    sess.run(step.global_step.assign(5))
    saved = sess.run(step.weights[0])
    checkpoints.save(sess, step, "runs/relative")
  sess, restored = checkpoints.start_session(step, "runs/relative")
  with sess:
    assert restored == os.path.join("runs/relative", "model.ckpt-5")
    assert sess.run(step.global_step) == 5
    np.testing.assert_array_equal(sess.run(step.weights[0]), saved)


def test_a_resumed_run_repeats_an_uninterrupted_one_noise_included(
    tmp_path):
  """Same seed, same losses; and a run resumed from its checkpoint at step
  3 goes on with the losses and ends with the weights of a run never
  stopped, input jitter and dropout included (the data position is the
  caller's: here every step feeds the same batch)."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(["models/switch_tiny.gin"],
                                      ["dropout_rate = 0.1"])
  tokens = np.random.RandomState(1).randint(2, 32, (4, 8)).astype(np.int32)

  def run(model_dir, steps, save_at=None):
    step = step_lib.build_step_graph(models.make_bitransformer(32), 4, 8, 8)
    assert len(step.noise) >= 2  # jitter and dropout draws
    sess, _ = checkpoints.start_session(step, model_dir)
    losses = []
    with sess:
      while len(losses) < steps:
        _, loss = sess.run([step.train_op, step.loss],
                           {step.inputs: tokens, step.targets: tokens})
        losses.append(loss)
        if len(losses) == save_at:
          checkpoints.save(sess, step, model_dir)
      return losses, sess.run(step.weights)

  losses, weights = run(str(tmp_path / "a"), 6, save_at=3)
  assert run(None, 6)[0] == losses
  resumed, resumed_weights = run(str(tmp_path / "a"), 3)
  assert resumed == losses[3:]
  for got, want in zip(resumed_weights, weights):
    np.testing.assert_array_equal(got, want)


_KILLED_INSIDE_THE_THIRD_SAVE = """
import os, signal, sys
import gin
import numpy as np
from mtf_switch import models
from mtf_switch.training import checkpoints, step as step_lib
from tensorflow.python.checkpoint import checkpoint_management

model_dir = sys.argv[1]
gin.parse_config_file("models/switch_tiny.gin")
tokens = np.random.RandomState(0).randint(2, 32, (4, 8)).astype(np.int32)
step = step_lib.build_step_graph(models.make_bitransformer(32), 4, 8, 8)
update_state = checkpoint_management.update_checkpoint_state_internal

def killed_at_the_third(*args, **kwargs):
  # The third save's files are written; its state file is not.
  if kwargs["model_checkpoint_path"].endswith("model.ckpt-3"):
    os.kill(os.getpid(), signal.SIGKILL)
  return update_state(*args, **kwargs)

checkpoint_management.update_checkpoint_state_internal = killed_at_the_third
sess, _ = checkpoints.start_session(step, None)
with sess:
  for i in range(3):
    sess.run(step.train_op, {step.inputs: tokens, step.targets: tokens})
    np.save(os.path.join(model_dir, "weights-%d.npy" % (i + 1)),
            sess.run(step.weights[0]))
    checkpoints.save(sess, step, model_dir)
"""


@pytest.mark.slow
def test_a_run_killed_inside_a_save_resumes_from_the_last_complete_one(
    tmp_path):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  result = subprocess.run(
      [sys.executable, "-c", _KILLED_INSIDE_THE_THIRD_SAVE, str(model_dir)],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  assert list(model_dir.glob("model.ckpt-3.index"))  # killed mid-save
  step, tokens = _tiny_switch_step()
  sess, restored = checkpoints.start_session(step, str(model_dir),
                                             out=io.StringIO())
  with sess:
    assert restored == str(model_dir / "model.ckpt-2")
    np.testing.assert_array_equal(sess.run(step.weights[0]),
                                  np.load(model_dir / "weights-2.npy"))
    # The run goes on: step 3 again, saved over the partial one.
    sess.run(step.train_op, {step.inputs: tokens, step.targets: tokens})
    assert checkpoints.save(sess, step, str(model_dir)).endswith(
        "model.ckpt-3")
  assert checkpoints.latest(str(model_dir)) == str(model_dir / "model.ckpt-3")
