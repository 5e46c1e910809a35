"""Greedy decoding restores a checkpoint and takes each next token's argmax;
task metrics are scored with the task's own functions."""
import gin
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np
import pytest

from mtf_switch import models
from mtf_switch import tasks
from mtf_switch.training import checkpoints
from mtf_switch.training import decode
from mtf_switch.training import step as step_lib

VOCAB, INPUT_LENGTH, DECODE_LENGTH = 24, 8, 6


def _trained_checkpoint(model_dir):
  """A tiny Switch bitransformer trained 40 steps on one example, enough to
  decode more than padding.  Its evaluation is dropless (switch_tiny.gin),
  so the full-sequence pass and incremental decoding route alike."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(models.make_bitransformer(VOCAB), 1,
                                   INPUT_LENGTH, DECODE_LENGTH)
  inputs = np.array([[7, 3, 9, 11, 5, 1, 0, 0]], np.int32)
  targets = np.array([[5, 9, 7, 3, 1, 0]], np.int32)
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    for _ in range(40):
      sess.run(step.train_op, {step.inputs: inputs, step.targets: targets})
    checkpoints.save(sess, step, model_dir)


def _log_likelihood(sess, step, inputs, targets):
  return sess.run(step.token_log_likelihood,
                  {step.inputs: inputs, step.targets: targets[None]})


def test_greedy_decode_takes_the_argmax_of_every_next_token(tmp_path):
  _trained_checkpoint(str(tmp_path))
  inputs = np.array([[4, 8, 12, 6, 3, 1, 0, 0]], np.int32)  # not trained on
  model = models.make_bitransformer(VOCAB)
  graph = decode.build_decode_graph(model, 1, INPUT_LENGTH, DECODE_LENGTH)
  sess, _ = checkpoints.start_session(graph, str(tmp_path))
  with sess:
    decoded = sess.run(graph.outputs, {graph.inputs: inputs})[0]
  # Independently: teacher-forced log-likelihoods of the prefix decoded so
  # far followed by every candidate token; the decoded token must win.
  step = step_lib.build_step_graph(model, 1, INPUT_LENGTH, DECODE_LENGTH,
                                   train=False)
  sess, _ = checkpoints.start_session(step, str(tmp_path))
  checked = 0
  with sess:
    for t, token in enumerate(decoded):
      if token == 0:
        break
      scores = []
      for candidate in range(1, VOCAB):
        targets = np.zeros(DECODE_LENGTH, np.int32)
        targets[:t] = decoded[:t]
        targets[t] = candidate
        scores.append(_log_likelihood(sess, step, inputs, targets))
      assert 1 + int(np.argmax(scores)) == token, (t, decoded)
      checked += 1
      if token == 1:  # EOS
        break
  assert checked >= 2


def test_decoding_needs_an_encoder_decoder():
  model = helpers.tiny_switch_lm()
  with pytest.raises(ValueError, match="encoder-decoder model .* got "
                     "Unitransformer"):
    decode.build_decode_graph(model, 1, 8, 8)


def test_text_stops_at_eos_and_score_uses_the_tasks_metric():
  task = tasks.get_task_or_mixture("mtf_switch_default_docstring_summary")
  vocabulary = task.output_features["targets"].vocabulary
  ids = vocabulary.encode("Return the sum of two numbers.")
  assert decode.text(vocabulary, ids + [1, 7, 7]) == decode.text(
      vocabulary, ids + [0, 0]) == "Return the sum of two numbers."
  targets = ["Return the sum of two numbers.", "Open a file for reading."]
  exact = decode.score(task, targets, targets)
  half = decode.score(task, targets, ["Return the sum of two numbers.",
                                      "Close the socket now."])
  assert exact["examples"] == 2
  assert exact["rouge1"] == pytest.approx(100.0)
  assert 40.0 < half["rouge1"] < 70.0
