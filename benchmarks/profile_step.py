r"""Where a study model's training step spends its time: TensorFlow's trace.

Builds each model's training step as the study does (`study_step_time.build`:
same gin, task, batch and lengths, one device), warms it up, then runs
--steps steps under `RunOptions(trace_level=FULL_TRACE)` and sums the
time of every executed TensorFlow op by what it belongs to, read from its
name (mesh-tensorflow names each lowered op after its mtf operation, and
the gradient and optimizer ops after theirs):

  routing        the Switch layer's router: logits, softmax, top-1 and the
                 capacity bookkeeping (`.../SwitchFeedForward/router/...`)
  dispatch       tokens into the [experts, groups, capacity, d_model]
                 buffers and back out (the one-hot or index einsums, the
                 reshapes that move the split)
  experts        the experts' matmuls and activation (`.../wi`, `.../wo`)
  other layers   attention, dense FFNs, layer norms, embeddings, the loss
  optimizer      Adafactor's update of each weight, expert weights apart
                 from the others
  rest           TensorFlow ops outside mesh-tensorflow's slices: variable
                 reads, feeds, fetches, the step counter

each forward and backward apart (a gradient op carries its forward op's
name under `gradients`).  The op times overlap on 2 cores, so the table
gives each row's share of the summed op time and that share of the
untraced step's median wall time; the traced step itself is slower.

  python benchmarks/profile_step.py --study studies/experts_1x.gin \
      --models dense_init1.0,switch_8_init1.0,switch_32_init1.0,\
switch_64_init1.0 --out benchmarks/results

writes profile_step_<study>.csv, .md and .png.
"""
import argparse
import collections
import csv
import os
import re
import statistics
import sys
import time

import study_step_time  # benchmarks/ is the script's own folder

CATEGORIES = ("routing", "dispatch", "experts", "other layers",
              "optimizer: expert weights", "optimizer: other weights",
              "rest")
_SWITCH = re.compile(r"^(.*?SwitchFeedForward)/")
# Expert weights' variables, as the optimizer's ops name them.
_EXPERT_WEIGHT = re.compile(r"SwitchFeedForward/(?:expert/)?w[io]/")
# The router's own ops at the layer's scope: its input jitter, the top-k
# choice and the cumulative sum that numbers each expert's queue.
_ROUTER_OPS = re.compile(r"^(?:router|random|top_k|cumsum|softmax)")
# The experts' own ops besides their matmuls: activation, expert dropout.
_EXPERT_OPS = re.compile(r"^(?:relu|gelu|expert|dropout|custom_gradient)")


def expert_matmuls(tf_graph):
  """Name prefixes of the Switch layers' expert matmuls (forward): the
  einsums at a layer's scope, outside its router, that read a weight."""
  prefixes = set()
  for op in tf_graph.get_operations():
    match = _SWITCH.match(op.name)
    if (match and op.type == "Einsum" and "gradients" not in op.name
        and not _ROUTER_OPS.match(op.name[match.end():])
        and any(i.op.type == "ReadVariableOp" for i in op.inputs)):
      prefixes.add(op.name.split("/parallel_")[0])
  return prefixes


def category(node_name, matmuls):
  """(category, pass) of a lowered op's name; pass is "forward",
  "backward" or "" (the optimizer and the rest have none).

  Args:
    node_name: a TensorFlow node's name.
    matmuls: `expert_matmuls` of its graph.
  """
  if "adafactor" in node_name:
    return ("optimizer: expert weights" if _EXPERT_WEIGHT.search(node_name)
            else "optimizer: other weights"), ""
  phase = "backward" if "gradients" in node_name else "forward"
  match = _SWITCH.match(node_name)
  if match:
    inner = node_name[match.end():]
    if _ROUTER_OPS.match(inner):
      return "routing", phase
    if (_EXPERT_OPS.match(inner)
        or any(node_name.startswith(m + "/") for m in matmuls)):
      return "experts", phase
    return "dispatch", phase
  # mesh-tensorflow computes a slice of a tensor per mesh position, in ops
  # named `.../parallel_<position>/...`; the rest is TensorFlow's own.
  if "/parallel_" not in node_name:
    return "rest", ""
  return "other layers", phase


def trace_step(sess, graph, batch):
  """{node name: microseconds} of one traced training step."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
  metadata = tf.RunMetadata()
  sess.run(graph.train_op, {graph.inputs: batch["inputs"],
                            graph.targets: batch["targets"]},
           options=options, run_metadata=metadata)
  times = collections.Counter()
  for device in metadata.step_stats.dev_stats:
    for node in device.node_stats:
      times[node.node_name.split(":")[0]] += node.op_end_rel_micros
  return times


def wall_step(sess, graph, batch, steps):
  """Median seconds of an untraced training step."""
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    sess.run(graph.train_op, {graph.inputs: batch["inputs"],
                              graph.targets: batch["targets"]})
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def profile(sess, graph, batches, steps):
  """(Counter {(category, pass): microseconds} summed over steps, median
  wall seconds of an untraced step, Counter of the op names' times)."""
  matmuls = expert_matmuls(sess.graph)
  batch = next(batches)
  wall_step(sess, graph, batch, 3)  # warm up
  by_name = collections.Counter()
  for _ in range(steps):
    by_name.update(trace_step(sess, graph, batch))
  wall = wall_step(sess, graph, batch, steps)
  by_category = collections.Counter()
  for name, micros in by_name.items():
    by_category[category(name, matmuls)] += micros
  return by_category, wall, by_name, matmuls


def rows(results):
  """One row per model and (category, pass): share of the op time and
  the milliseconds of the untraced step it stands for."""
  result = []
  for model, (by_category, wall, _, _) in results.items():
    total = sum(by_category.values())
    for cat in CATEGORIES:
      for phase in ("forward", "backward", ""):
        micros = by_category.get((cat, phase), 0)
        if not micros:
          continue
        share = micros / total
        result.append({"model": model, "part": cat, "pass": phase or "-",
                       "share": round(share, 4),
                       "ms_of_step": round(1000 * share * wall, 2),
                       "step_ms": round(1000 * wall, 1)})
  return result


def write(result, out_dir, name, title):
  """CSV, Markdown (a models x parts table) and a stacked-bar PNG."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "profile_step_%s" % name)
  with open(path + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(result[0]))
    writer.writeheader()
    writer.writerows(result)
  models = list(dict.fromkeys(r["model"] for r in result))
  parts = [(c, p) for c in CATEGORIES for p in ("forward", "backward", "-")
           if any(r["part"] == c and r["pass"] == p for r in result)]
  cell = {(r["model"], r["part"], r["pass"]): r for r in result}
  step = {r["model"]: r["step_ms"] for r in result}
  with open(path + ".md", "w") as f:
    f.write("# %s\n\nms of the untraced step's median (share of the summed "
            "op time)\n\n| part | pass | %s |\n|---|---|%s\n" % (
                title, " | ".join(models), "---|" * len(models)))
    for c, p in parts:
      f.write("| %s | %s | %s |\n" % (c, p, " | ".join(
          "%.1f (%.0f%%)" % (cell[(m, c, p)]["ms_of_step"],
                             100 * cell[(m, c, p)]["share"])
          if (m, c, p) in cell else "-" for m in models)))
    f.write("| step | | %s |\n" % " | ".join("%.1f" % step[m]
                                               for m in models))
  _plot(result, models, parts, path + ".png", title)
  return path


def _plot(result, models, parts, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cell = {(r["model"], r["part"], r["pass"]): r["ms_of_step"] for r in result}
  fig, ax = plt.subplots(figsize=(9, 5))
  bottom = [0.0] * len(models)
  colors = plt.get_cmap("tab20").colors
  for k, (c, p) in enumerate(parts):
    heights = [cell.get((m, c, p), 0.0) for m in models]
    ax.bar(range(len(models)), heights, bottom=bottom,
           color=colors[k % len(colors)],
           label=c if p == "-" else "%s (%s)" % (c, p))
    bottom = [b + h for b, h in zip(bottom, heights)]
  ax.set_xticks(range(len(models)))
  ax.set_xticklabels(models, fontsize=8)
  ax.set_ylabel("ms of a training step")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--study", default="studies/experts_1x.gin")
  parser.add_argument("--models", default="dense_init1.0,switch_8_init1.0,"
                      "switch_32_init1.0,switch_64_init1.0")
  parser.add_argument("--steps", type=int, default=10,
                      help="traced steps (and untraced ones) per model")
  parser.add_argument("--bindings", default="",
                      help="extra gin bindings for every Switch model, "
                           "';'-separated (e.g. a dispatch mode)")
  parser.add_argument("--name", default=None,
                      help="output name (default: the study's)")
  parser.add_argument("--top", type=int, default=0,
                      help="also print each model's N slowest op names")
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args(argv)
  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch.studies import run_study  # pylint: disable=g-import-not-at-top
  tf.disable_eager_execution()
  study = run_study.load_study(args.study, quick=False)
  names = args.models.split(",")
  unknown = sorted(set(names) - set(study.models))
  if unknown:
    sys.exit("--models: %s not in the study %s (it has %s)"
             % (unknown, study.name, sorted(study.models)))
  extra = [b for b in args.bindings.split(";") if b.strip()]
  results = {}
  for i, name in enumerate(names):
    config = list(study.models[name])
    if extra and "switch" in config[0]:
      study.models[name] = config + extra
    print("[%d/%d] %s: building, then %d traced steps" % (
        i + 1, len(names), name, args.steps), flush=True)
    sess, graph, batches = study_step_time.build(study, name)
    with sess:
      results[name] = profile(sess, graph, batches, args.steps)
    print("  %.1f ms a step" % (1000 * results[name][1]), flush=True)
    by_name, matmuls = results[name][2], results[name][3]
    for op, micros in by_name.most_common(args.top):
      print("    %8.1f ms  %-18s %s" % (micros / 1000 / args.steps,
                                        "/".join(category(op, matmuls)), op))
  title = ("%s: where a training step's time goes (%s, %d traced steps)"
           % (study.name, time.strftime("%Y-%m-%d"), args.steps))
  path = write(rows(results), args.out, args.name or study.name, title)
  with open(path + ".md") as f:
    print(f.read())


if __name__ == "__main__":
  main()
