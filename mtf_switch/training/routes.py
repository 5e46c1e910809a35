"""Where each token went: every Switch layer's expert and gate, per token.

`token_routes` runs a checkpoint's model (evaluation mode: eval capacity,
no jitter) on a task's validation examples and returns one row per token,
Switch layer and choice: the token, the expert it chose, its gate, and
whether the expert had room for it.  `specialization` turns the rows into
what each expert takes beyond chance: for each layer and expert, the share
of each token kind among its tokens over that kind's share among all the
layer's tokens (1 is chance), and the expert's most over-represented
tokens.  The command is `mtf_switch.training.dump_routes`.

The weights are read by name and cast to float32, so that a checkpoint of
the main job (float32) and one of T5's binary (bfloat16 masters by
default) both restore.
"""
import collections
import csv
import itertools
import re

import mesh_tensorflow as mtf
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import tasks
from mtf_switch.training import data
from mtf_switch.training import mesh as mesh_lib

FIELDS = ("example", "stack", "position", "token_id", "piece", "layer",
          "choice", "expert", "gate", "kept")

# Token kinds of a SentencePiece piece, in the order the plot shows them.
KINDS = ("word start", "word piece", "number", "punctuation", "special")
_WORD_START = "\u2581"  # SentencePiece's space


def token_kind(token_id, piece):
  """The kind of a token: a word's start or inner piece, a number,
  punctuation (and other symbols), or special (padding and start, EOS,
  unknown, span corruption's sentinels)."""
  if token_id < 3 or "<extra_id_" in piece:
    return "special"
  text = piece.lstrip(_WORD_START)
  if not text:
    return "punctuation"  # a bare space
  if any(c.isdigit() for c in text):
    return "number"
  if not any(c.isalnum() for c in text):
    return "punctuation"
  return "word start" if piece.startswith(_WORD_START) else "word piece"


def _pieces(task_name):
  """A function from token id to its piece in the task's vocabulary."""
  vocabulary = tasks.get_task_or_mixture(task_name).output_features[
      "targets"].vocabulary
  tokenizer = getattr(vocabulary, "tokenizer", None)
  if tokenizer is not None and hasattr(tokenizer, "id_to_piece"):
    return lambda i: tokenizer.id_to_piece(int(i))
  return lambda i: vocabulary.decode([int(i)])


def _restore(sess, masters, checkpoint):
  """Loads every master weight from the checkpoint by name, cast to its
  dtype (through its initializer: no new op).

  Raises:
    ValueError: naming the first weights the checkpoint does not hold.
  """
  reader = tf.train.load_checkpoint(checkpoint)
  missing = sorted(n for n in masters if not reader.has_tensor(n))
  if missing:
    raise ValueError("%s does not hold this model's %s%s: give the gin "
                     "model it was trained with" % (
                         checkpoint, ", ".join(missing[:3]),
                         " and %d more" % (len(missing) - 3)
                         if len(missing) > 3 else ""))
  for name, master in masters.items():
    value = reader.get_tensor(name).astype(master.dtype.base_dtype
                                            .as_numpy_dtype)
    sess.run(master.initializer, {master.initial_value: value})


def _stack_tokens(scope, inputs, targets):
  """(the ids a layer's rows process, which of them are real tokens).

  The encoder processes the inputs; a bitransformer's decoder the targets
  shifted right (position p reads target p - 1, the first a start token,
  id 0); a decoder-only LM its inputs, which are its targets shifted
  right already (`data.task_batches`).
  """
  stack = scope.split("/")[0]
  if stack == "encoder":
    return inputs, inputs != 0
  if stack == "decoder":
    shifted = np.concatenate(
        [np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    return shifted, targets != 0
  return inputs, targets != 0


def token_routes(model, checkpoint, task_name, num_examples, input_length,
                 target_length, batch_size=8):
  """Routes of the first num_examples validation examples of a task.

  Args:
    model: the gin-configured model of the checkpoint.
    checkpoint: a checkpoint path.
    task_name: a registered seqio task.
    num_examples: examples to route (the first ones of the validation
      split, in order).
    input_length, target_length: as the task's batches (step_lengths).
    batch_size: examples a step.

  Returns:
    list of dicts with FIELDS, padding left out.

  Raises:
    ValueError: if the model has no Switch layer, or the checkpoint does
      not hold its weights.
  """
  graph = tf.Graph()
  with graph.as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    batch_dim = mtf.Dimension("batch", batch_size)
    inputs = tf.placeholder(tf.int32, [batch_size, input_length])
    targets = tf.placeholder(tf.int32, [batch_size, target_length])
    model.call_simple(
        inputs=mtf.import_tf_tensor(mesh, inputs, [
            batch_dim, mtf.Dimension("length", input_length)]),
        targets=mtf.import_tf_tensor(mesh, targets, [
            batch_dim, mtf.Dimension("length", target_length)]),
        compute_loss=False, mode=tf.estimator.ModeKeys.EVAL,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32))
    routes = layers.routes(mesh.graph)
    if not routes:
      raise ValueError("the gin model has no Switch layer to route with")
    lowering = mesh_lib.lower(mesh.graph, mesh)
    fetches = {
        (scope, choice): [lowering.export_to_tf_tensor(t) for t in (
            a.expert_index, a.gate, a.fits)]
        for scope, assignments in routes.items()
        for choice, a in enumerate(assignments)}
    masters = {v.name: v.get_master() for v in mesh.graph.all_variables}
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      _restore(sess, masters, checkpoint)
      sess.run(lowering.copy_masters_to_slices())
      batches = data.task_batches(task_name, "validation", batch_size,
                                  input_length, target_length, repeat=False)
      return _route_batches(sess, fetches, inputs, targets, batches,
                            num_examples, _pieces(task_name))


def _route_batches(sess, fetches, inputs, targets, batches, num_examples,
                   piece):
  rows = []
  first = 0
  for batch in batches:
    if first >= num_examples:
      break
    batch_inputs, batch_targets = batch["inputs"], batch["targets"]
    got = sess.run(fetches, {inputs: batch_inputs, targets: batch_targets})
    for (scope, choice), (expert, gate, fits) in sorted(got.items()):
      ids, real = _stack_tokens(scope, batch_inputs, batch_targets)
      shape = ids.shape
      expert, gate, fits = (a.reshape(shape) for a in (expert, gate, fits))
      for b, position in itertools.product(range(shape[0]),
                                           range(shape[1])):
        if first + b >= num_examples or not real[b, position]:
          continue
        rows.append(dict(
            example=first + b, stack=scope.split("/")[0], position=position,
            token_id=int(ids[b, position]), piece=piece(ids[b, position]),
            layer=scope, choice=choice, expert=int(expert[b, position]),
            gate=round(float(gate[b, position]), 5),
            kept=int(fits[b, position] > 0)))
    first += len(batch_inputs)
  rows.sort(key=lambda r: (r["example"], r["layer"], r["position"],
                           r["choice"]))
  return rows


def write_tsv(rows, path):
  with tf.io.gfile.GFile(path, "w") as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS, delimiter="\t",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


Specialization = collections.namedtuple(
    "Specialization", ["layer", "lift", "experts", "top_tokens"])
Specialization.__doc__ = """What one Switch layer's experts take.

Attributes:
  layer: the layer's scope.
  lift: [experts, len(KINDS)] float: the share of each kind among the
    expert's first-choice tokens over the kind's share among the layer's
    (1: chance; NaN where the layer saw no token of the kind).
  experts: [experts] int, first-choice tokens each expert took.
  top_tokens: list per expert of (piece, count, lift) of its tokens most
    over-represented against chance (lift > 1), at least `min_count`
    times.
"""


def specialization(rows, num_experts, min_count=3, top=5):
  """Per Switch layer, what its experts take beyond chance (first choices).

  Returns:
    list of Specialization, one per layer, in layer order.
  """
  found = []
  by_layer = collections.defaultdict(list)
  for r in rows:
    if r["choice"] == 0:
      by_layer[r["layer"]].append(r)
  # The encoder's layers first, then the decoder's, each in order.
  for layer, layer_rows in sorted(by_layer.items(),
                                  key=lambda kv: (kv[0].split("/")[0] !=
                                                  "encoder", kv[0])):
    kinds = np.zeros((num_experts, len(KINDS)))
    tokens = collections.Counter()
    per_expert = [collections.Counter() for _ in range(num_experts)]
    for r in layer_rows:
      kinds[r["expert"], KINDS.index(token_kind(r["token_id"],
                                                r["piece"]))] += 1
      tokens[r["piece"]] += 1
      per_expert[r["expert"]][r["piece"]] += 1
    experts = kinds.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
      lift = ((kinds / experts[:, None])
              / (kinds.sum(0) / kinds.sum())[None, :])
    total = len(layer_rows)
    top_tokens = []
    for e, counts in enumerate(per_expert):
      scored = [(piece, n, (n / experts[e]) / (tokens[piece] / total))
                for piece, n in counts.items() if n >= min_count]
      over = [t for t in scored if t[2] > 1]  # beyond chance only
      top_tokens.append(sorted(over, key=lambda t: (-t[2], -t[1]))[:top])
    found.append(Specialization(layer, lift, experts.astype(int),
                                top_tokens))
  return found


def _short(layer):
  return re.sub(r"/SwitchFeedForward$", "", layer)


def plot(found, path):
  """One heatmap per layer: experts x token kinds, the lift on a log2
  scale (written in the cells for up to 16 experts)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(
      1, len(found), figsize=(3.4 * len(found) + 1.5, 4.5), squeeze=False)
  for i, (ax, s) in enumerate(zip(axes[0], found)):
    with np.errstate(divide="ignore"):  # a kind an expert never took
      log_lift = np.log2(s.lift)
    image = ax.imshow(log_lift, cmap="RdBu_r", vmin=-2, vmax=2,
                      aspect="auto")
    ax.set_title(_short(s.layer), fontsize=8)
    ax.set_xticks(range(len(KINDS)))
    ax.set_xticklabels(KINDS, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(s.experts)))
    ax.tick_params(axis="y", labelsize=7)
    if not i:
      ax.set_ylabel("expert")
    if len(s.experts) <= 16:
      for (e, k), lift in np.ndenumerate(s.lift):
        if np.isfinite(lift):
          ax.text(k, e, "%.1f" % lift, ha="center", va="center", fontsize=6)
  figure.colorbar(image, ax=axes[0].tolist(),
                  label="log2 lift: share among the expert's tokens / "
                        "share among all")
  figure.suptitle("Token kinds each expert takes beyond chance (first "
                  "choices; 1.0 is chance)", fontsize=10)
  figure.savefig(path, dpi=110, bbox_inches="tight")
  pyplot.close(figure)


def summary_lines(found):
  """Per layer and expert: tokens taken, and the most over-represented."""
  lines = []
  for s in found:
    lines.append("%s:" % _short(s.layer))
    for e, (n, top) in enumerate(zip(s.experts, s.top_tokens)):
      lines.append("  expert %d: %d tokens; most over-represented: %s" % (
          e, n, ", ".join("%r x%d (%.1fx)" % t for t in top) or "none"))
  return lines
