"""The training loop: steps to a total, actions when due, resumption."""
import functools
import io
import itertools

import gin
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import guard
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import loop
from mtf_switch.training import step as step_lib


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


class _Fetched(loop.Action):
  """Records, every step, what the loop fetched (reading no more)."""
  reads_all_values = False

  def __init__(self, steps):
    super().__init__(1, steps)
    self.seen = {}

  def act(self, sess, step, values):
    self.seen[step] = (sorted(values["metrics"]), sorted(values["scalars"]))


def test_metrics_and_scalars_are_fetched_only_for_a_step_that_reads_them():
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(models.make_bitransformer(32), 4, 8, 8)
  tokens = helpers.random_tokens(np.random.RandomState(0), 4, 8, 32)
  batches = itertools.repeat({"inputs": tokens, "targets": tokens})
  sess, _ = checkpoints.start_session(step, None)
  fetched = _Fetched(7)
  with sess:
    loop.train(sess, step, batches, 7, [_Record(every=3, steps=7), fetched])
  every_step = (fetched.seen[1][0], ["gradient_norm"])
  all_values = (sorted(step.metrics), sorted(step.scalars))
  assert every_step[0] == [] and len(all_values[0]) > 4
  assert {s: v == all_values for s, v in fetched.seen.items()} == {
      1: False, 2: False, 3: True, 4: False, 5: False, 6: True, 7: True}
  assert all(fetched.seen[s] == every_step for s in (1, 2, 4, 5))


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


def _diverging_step_graph(optimizer_class):
  """The tiny Switch model's step at learning rate 1e4, and its batches."""
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(
      models.make_bitransformer(32), 4, 8, 8,
      make_optimizer=functools.partial(optimizer_class, learning_rate=1e4))
  tokens = helpers.random_tokens(np.random.RandomState(0), 4, 8, 32)
  return step, itertools.repeat({"inputs": tokens, "targets": tokens})


class _Weights(loop.Action):
  """Records the weights after every step."""

  def __init__(self, step_graph):
    super().__init__(1, None)
    self.step_graph = step_graph
    self.after = {}

  def act(self, sess, step, values):
    sess.run(self.step_graph.save_ops)
    self.after[step] = sess.run(self.step_graph.weights)


def test_a_run_that_skips_non_finite_steps_counts_them_then_stops(tmp_path):
  step, batches = _diverging_step_graph(
      guard.SkipNonFiniteAdafactorOptimizer)
  model_dir = str(tmp_path)
  out = io.StringIO()
  weights = _Weights(step)
  sess, _ = checkpoints.start_session(step, None)
  with sess, pytest.raises(checkpoints.NonFiniteError,
                           match=r"step \d+: 4 steps in a row skipped; "
                                 r"stopped without saving"):
    loop.train(sess, step, batches, 200, [
        weights,
        loop.StopOnNonFinite(200, model_dir, max_skips_in_a_row=3, out=out),
        loop.WriteSummaries(1, 200, model_dir)])
  lines = out.getvalue().splitlines()
  assert [line.split("(")[1] for line in lines] == [
      "%d skipped in this run)" % n for n in (1, 2, 3, 4)]
  first_skip = int(lines[0].split()[1])
  assert [int(line.split()[1]) for line in lines] == list(
      range(first_skip, first_skip + 4))
  # The skipped steps changed nothing, and what they kept is finite.
  before = weights.after[first_skip - 1]
  assert all(np.all(np.isfinite(w)) for w in before)
  for skipped in range(first_skip, first_skip + 4):
    for kept, was in zip(weights.after[skipped], before):
      np.testing.assert_array_equal(kept, was)
  scalars = helpers.summary_scalars(model_dir)
  assert scalars["skipped_steps"] == 3  # the 4th stopped before summaries
  assert scalars["nonfinite_step_skipped"] == 1


def _values(loss=1.0, metric=0.5, **scalars):
  return {"loss": loss, "metrics": {"encoder/aux_loss": metric},
          "scalars": scalars}


@pytest.mark.parametrize("values,named", [
    (_values(loss=np.nan), "loss nan"),
    (_values(gradient_norm=np.inf), "gradient norm inf"),
    (_values(metric=np.nan), "encoder/aux_loss"),
])
def test_the_guard_names_the_first_non_finite_value(values, named):
  guard_action = loop.StopOnNonFinite(10)
  guard_action(None, 1, _values(gradient_norm=3.0))
  with pytest.raises(checkpoints.NonFiniteError, match="step 2: .*" + named):
    guard_action(None, 2, values)


def test_the_guard_allows_skips_in_a_row_up_to_its_limit():
  guard_action = loop.StopOnNonFinite(10, max_skips_in_a_row=2,
                                      out=io.StringIO())
  skip, take = 1.0, 0.0
  for step, skipped in enumerate([skip, skip, take, skip, skip], 1):
    values = _values(nonfinite_step_skipped=skipped)
    guard_action(None, step, values)
    assert values["scalars"]["skipped_steps"] == guard_action.skipped
  assert guard_action.skipped == 4
  with pytest.raises(checkpoints.NonFiniteError,
                     match="step 6: 3 steps in a row skipped"):
    guard_action(None, 6, _values(nonfinite_step_skipped=skip))
