"""The training loop: steps to a total, actions when due, resumption."""
import functools
import itertools

import gin
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import checkpoints
from mtf_switch import loop
from mtf_switch import models
from mtf_switch import step as step_lib


class _Record(loop.Action):

  def __init__(self, every, steps):
    super().__init__(every, steps)
    self.acted = []

  def act(self, sess, step, values):
    self.acted.append((step, float(values["loss"])))


def test_train_runs_actions_when_due_and_resumes_from_the_global_step():
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(
      models.make_bitransformer(32), 4, 8, 8,
      make_optimizer=functools.partial(mtf.optimize.AdafactorOptimizer,
                                       learning_rate=1e-2))
  tokens = helpers.random_tokens(np.random.RandomState(0), 4, 8, 32)
  batches = itertools.repeat({"inputs": tokens, "targets": tokens})
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    record = _Record(every=3, steps=7)
    history = loop.train(sess, step, batches, 7, [record])
    assert [s for s, _ in history] == list(range(1, 8))
    # Every 3 steps and at the last one, with that step's loss.
    assert record.acted == [history[2], history[5], history[6]]
    assert history[-1][1] < history[0][1]
    # A second call continues from the global step to the new total.
    more = loop.train(sess, step, batches, 9)
    assert [s for s, _ in more] == [8, 9]
    assert loop.train(sess, step, batches, 9) == []


def test_log_likelihood_is_the_mean_over_real_target_tokens():
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(models.make_bitransformer(32), 2, 8, 8,
                                   train=False)
  rng = np.random.RandomState(1)
  batches = [{"inputs": helpers.random_tokens(rng, 2, 8, 32),
              "targets": helpers.random_tokens(rng, 2, 8, 32, num_padding=n)}
             for n in (0, 3, 5)]
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    sums_and_counts = [
        sess.run([step.token_log_likelihood, step.num_tokens],
                 {step.inputs: b["inputs"], step.targets: b["targets"]})
        for b in batches]
    got = loop.log_likelihood(sess, step, iter(batches), max_batches=2)
  np.testing.assert_array_equal([c for _, c in sums_and_counts],
                                [16, 10, 6])
  (s0, c0), (s1, c1), _ = sums_and_counts
  np.testing.assert_allclose(got, (s0 + s1) / (c0 + c1), rtol=1e-6)
  assert got < 0


def test_a_diverging_run_stops_before_saving_a_non_finite_state(tmp_path):
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(
      models.make_bitransformer(32), 4, 8, 8,
      make_optimizer=functools.partial(mtf.optimize.AdafactorOptimizer,
                                       learning_rate=1e4))
  tokens = helpers.random_tokens(np.random.RandomState(0), 4, 8, 32)
  batches = itertools.repeat({"inputs": tokens, "targets": tokens})
  model_dir = str(tmp_path)
  sess, _ = checkpoints.start_session(step, None)
  with sess, pytest.raises(checkpoints.NonFiniteError,
                           match=r"step (\d+): .*stopped without saving "
                           r".*\(last checkpoint: .*model.ckpt-\d+\)") as err:
    checkpoints.save(sess, step, model_dir)  # the good state, step 0
    loop.train(sess, step, batches, 200, [
        loop.StopOnNonFinite(200, model_dir),
        loop.SaveCheckpoint(1, 200, step, model_dir, out=None)])
  bad_step = int(err.value.args[0].split()[1].rstrip(":"))
  assert bad_step < 200
  saved = tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_paths
  assert all(int(p.rsplit("-", 1)[1]) < bad_step for p in saved)
  for path in saved:
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
      assert np.all(np.isfinite(reader.get_tensor(name))), (path, name)
