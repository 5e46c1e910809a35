"""Where each token went: per-token routes of a checkpoint, what each
expert takes beyond chance, and the dump_routes command."""
import csv
import os
import subprocess
import sys

import gin
import helpers  # graph mode, compat shim
import numpy as np
import pytest

from mtf_switch import cli
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import data
from mtf_switch.training import loop
from mtf_switch.training import routes

TASK = "mtf_switch_default_span_corruption"
EXAMPLES, INPUT_LENGTH, TARGET_LENGTH = 12, 64, 16


@pytest.mark.parametrize("token_id,piece,kind", [
    (0, "<pad>", "special"), (1, "</s>", "special"),
    (32099, "\u2581<extra_id_0>", "special"),
    (52, "\u2581the", "word start"), (7, "ing", "word piece"),
    (80, "\u258112", "number"), (9, "3", "number"),
    (5, ",", "punctuation"), (6, "\u2581", "punctuation"),
    (11, "\u2581(", "punctuation")])
def test_token_kinds(token_id, piece, kind):
  assert routes.token_kind(token_id, piece) == kind


def _row(expert, piece, token_id=10, choice=0, layer="encoder/x"):
  return dict(expert=expert, piece=piece, token_id=token_id, choice=choice,
              layer=layer)


def test_specialization_is_each_experts_share_over_the_layers():
  # Expert 0 takes 3 word starts and a number; expert 1 two punctuation
  # marks and a word start.  Second choices do not count.
  rows = ([_row(0, "\u2581a")] * 3 + [_row(0, "\u25817")]
          + [_row(1, ",")] * 2 + [_row(1, "\u2581a")]
          + [_row(1, "\u25817", choice=1)])
  found, = routes.specialization(rows, num_experts=2, min_count=2)
  assert found.experts.tolist() == [4, 3]
  word, number, punctuation = (routes.KINDS.index(k) for k in (
      "word start", "number", "punctuation"))
  # Word starts: 3/4 of expert 0's tokens, 4/7 of the layer's.
  assert found.lift[0, word] == pytest.approx((3 / 4) / (4 / 7))
  assert found.lift[1, punctuation] == pytest.approx((2 / 3) / (2 / 7))
  assert found.lift[1, number] == 0
  assert np.isnan(found.lift[0, routes.KINDS.index("special")])
  # Tokens seen at least twice, most over-represented first.
  assert found.top_tokens[0] == [("\u2581a", 3, (3 / 4) / (4 / 7))]
  assert [t[0] for t in found.top_tokens[1]] == [","]


@pytest.fixture(scope="module")
def zero_router_dir(tmp_path_factory):
  """A fresh switch_tiny checkpoint whose routers are all zeros: every
  token's logits are equal, so each goes to expert 0 with gate 1/4."""
  model_dir = str(tmp_path_factory.mktemp("zero_router"))
  gin.clear_config()
  cli.parse_files(["models/switch_tiny.gin"])
  model = models.make_model(data.vocab_size(TASK))
  lengths = data.step_lengths(TASK, INPUT_LENGTH, TARGET_LENGTH)
  job = loop.TaskTraining(model, model_dir, TASK, 2, *lengths)
  with job.sess as sess:
    for weight in job.step_graph.weights:
      if weight.op.name.endswith("router/kernel"):
        sess.run(weight.initializer, {weight.initial_value: np.zeros(
            weight.shape.as_list(), np.float32)})
    checkpoints.save(sess, job.step_graph, model_dir)
  return model_dir, model


def _real_tokens():
  """Real input and target tokens of the first EXAMPLES examples."""
  batches = data.task_batches(TASK, "validation", EXAMPLES, INPUT_LENGTH,
                              TARGET_LENGTH, repeat=False)
  batch = next(batches)
  return (batch["inputs"] != 0).sum(), (batch["targets"] != 0).sum()


def test_every_real_token_is_routed_once_per_layer(zero_router_dir):
  model_dir, model = zero_router_dir
  rows = routes.token_routes(model, checkpoints.resolve(model_dir), TASK,
                             EXAMPLES, INPUT_LENGTH, TARGET_LENGTH,
                             batch_size=5)  # 3 batches, the last cut
  inputs, targets = _real_tokens()
  by_stack = {s: [r for r in rows if r["stack"] == s]
              for s in ("encoder", "decoder")}
  assert len(by_stack["encoder"]) == inputs
  assert len(by_stack["decoder"]) == targets
  assert {r["example"] for r in rows} == set(range(EXAMPLES))
  assert {(r["expert"], r["gate"], r["kept"], r["choice"])
          for r in rows} == {(0, 0.25, 1, 0)}
  # The decoder reads the targets shifted right: a start token first.
  first = [r for r in by_stack["decoder"] if r["position"] == 0]
  assert {r["token_id"] for r in first} == {0}


def test_the_command_writes_routes_and_specialization(zero_router_dir,
                                                       tmp_path):
  model_dir, _ = zero_router_dir
  out = str(tmp_path / "routes")
  done = subprocess.run(
      [sys.executable, "-m", "mtf_switch.training.dump_routes",
       "--model_dir", model_dir, "--out", out, "--examples", "4"],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert done.returncode == 0, done.stderr[-3000:]
  assert helpers.warning_lines(done.stdout + done.stderr) == []
  with open(os.path.join(out, "routes.tsv")) as f:
    rows = list(csv.DictReader(f, delimiter="\t"))
  assert list(rows[0]) == list(routes.FIELDS)
  assert {r["expert"] for r in rows} == {"0"}
  assert "%d rows" % len(rows) in done.stdout
  assert os.path.getsize(os.path.join(out, "specialization.png")) > 0
  with open(os.path.join(out, "specialization.txt")) as f:
    text = f.read()
  assert "encoder/block_000/layer_003:\n  expert 0: " in text
  assert "expert 3: 0 tokens" in text
