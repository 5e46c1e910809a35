r"""Step time of a study's models side by side, and what it makes of the
study's step-basis speed-ups on this machine.

The studies' own seconds come from runs made hours apart under whatever
else the machine was doing.  This builds each model's training step as the
study does (same gin, task, batch and lengths) in one process and times
them in turns: each round runs --steps steps of every model, in a new order
per round, so that drift hits all alike.  The median over rounds of each
model's seconds per step, against the baseline's, and the study's "steps to
the baseline's final loss" (its summary.csv) give the seconds each model
needs to reach that loss at these step times, and the curves give each
model's loss after as much training time as the baseline's whole run.

  python benchmarks/study_step_time.py --study studies/experts_decay.gin \
      --out benchmarks/results

writes study_step_time_experts_decay.csv, .md and .png (named after the
study).
"""
import argparse
import csv
import os
import random
import statistics
import sys
import time


def build(study, model):
  """(session, step graph, batch iterator) of one model's training step."""
  import gin  # pylint: disable=g-import-not-at-top
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch import models  # pylint: disable=g-import-not-at-top
  from mtf_switch.studies import study as study_lib  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import checkpoints  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import data  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import step  # pylint: disable=g-import-not-at-top

  gin.clear_config()
  study_lib.parse_model_config(study.models[model])
  lengths = (study.batch_size,) + data.step_lengths(
      study.task, study.input_length, study.target_length)
  graph = step.build_step_graph(
      models.make_model(data.vocab_size(study.task)), *lengths,
      make_optimizer=lambda: mtf.optimize.AdafactorOptimizer(
          learning_rate=study.learning_rate_at(tf.train.get_global_step())))
  sess, _ = checkpoints.start_session(graph, None)
  batches = data.task_batches(study.task, "train", *lengths, repeat=True,
                              shuffle=False)
  return sess, graph, batches


def time_rounds(built, rounds, steps, out):
  """{model: [seconds per step of each round]}, models in turns."""
  from mtf_switch.training import loop  # pylint: disable=g-import-not-at-top
  times = {model: [] for model in built}
  order = list(built)
  rng = random.Random(0)
  for r in range(rounds + 1):  # round 0 warms up
    rng.shuffle(order)
    for model in order:
      sess, graph, batches = built[model]
      done = int(sess.run(graph.global_step))
      start = time.perf_counter()
      loop.train(sess, graph, batches, done + steps)
      if r:
        times[model].append((time.perf_counter() - start) / steps)
    if r:
      print("round %d/%d: %s" % (r, rounds, ", ".join(
          "%s %.3f s" % (m, times[m][-1]) for m in built)), file=out,
            flush=True)
  return times


def rows(times, baseline, summary, curves, study_steps):
  """Result rows: median s/step, ratio to the baseline, and the seconds to
  the baseline's final loss from summary (model -> steps to it); then, at
  equal time (the paper's Table 1 reports quality and speed), the steps
  each model makes in the time the baseline's whole run of `study_steps`
  takes at these step times, and its seeds' mean validation loss there
  (curves: report.load_curves; empty past the model's last
  evaluation)."""
  from mtf_switch.studies import report  # pylint: disable=g-import-not-at-top
  base = statistics.median(times[baseline])
  base_steps = summary.get(baseline)
  result = []
  for model, seconds in times.items():
    median = statistics.median(seconds)
    steps = summary.get(model)
    to_target = median * steps if steps else None
    base_time = base * base_steps if base_steps else None
    steps_in_time = base * study_steps / median
    loss_in_time = (report.loss_at_step(curves[model], steps_in_time)
                    if curves.get(model) else None)
    result.append({
        "model": model, "step_seconds": round(median, 4),
        "spread": round(max(seconds) - min(seconds), 4),
        "vs_baseline": round(median / base, 3),
        "steps_to_baseline_final": steps,
        "seconds_to_baseline_final": round(to_target, 1) if steps else "",
        "time_speedup": (round(base_time / to_target, 2)
                         if steps and base_time else ""),
        "steps_in_baseline_time": round(steps_in_time),
        "loss_in_baseline_time": (round(loss_in_time, 4)
                                  if loss_in_time is not None else "")})
  return result


def read_summary(path):
  """model -> steps to the baseline's final loss (empty if never)."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {r["model"]: int(float(r["steps_to_baseline"]))
            for r in csv.DictReader(f) if r["steps_to_baseline"]}


def write(result, out_dir, study_name, title):
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "study_step_time_" + study_name)
  with open(path + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(result[0]))
    writer.writeheader()
    writer.writerows(result)
  with open(path + ".md", "w") as f:
    f.write(title + "\n\n| " + " | ".join(result[0]) + " |\n|" +
            "---|" * len(result[0]) + "\n")
    for row in result:
      f.write("| " + " | ".join(str(v) for v in row.values()) + " |\n")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  names = [r["model"] for r in result]
  axes[0].bar(names, [r["vs_baseline"] for r in result])
  axes[0].axhline(1.0, color="k", lw=0.8)
  axes[0].set_title("step time / baseline's")
  speedups = [r["time_speedup"] or 0 for r in result]
  axes[1].bar(names, speedups)
  axes[1].axhline(1.0, color="k", lw=0.8)
  axes[1].set_title("wall-time speed-up to the baseline's final loss")
  for ax in axes:
    ax.tick_params(axis="x", rotation=30)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path + ".png", dpi=100)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--study", default="studies/experts_decay.gin")
  parser.add_argument("--models", default=None,
                      help="comma-separated (default: all of the study's)")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=20,
                      help="steps of each model per round")
  parser.add_argument("--results_dir", default=None,
                      help="the study's results (default docs/studies/"
                           "<name>), for the steps to the baseline's final")
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args(argv)
  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch.studies import run_study  # pylint: disable=g-import-not-at-top
  tf.disable_eager_execution()
  study = run_study.load_study(args.study, quick=False)
  names = args.models.split(",") if args.models else list(study.models)
  unknown = sorted(set(names) - set(study.models))
  if unknown or study.baseline not in names:
    sys.exit("--models %s: the study %s has %s and needs its baseline %r"
             % (args.models, study.name, sorted(study.models),
                study.baseline))
  built = {name: build(study, name) for name in names}
  times = time_rounds(built, args.rounds, args.steps, sys.stdout)
  from mtf_switch.studies import report  # pylint: disable=g-import-not-at-top
  results_dir = args.results_dir or os.path.join("docs", "studies",
                                                 study.name)
  summary = read_summary(os.path.join(results_dir, "summary.csv"))
  result = rows(times, study.baseline, summary,
                report.load_curves(study, results_dir), study.steps)
  title = ("%s: median s/step over %d rounds of %d steps, models in turns "
           "(%s)" % (study.name, args.rounds, args.steps,
                     time.strftime("%Y-%m-%d")))
  path = write(result, args.out, study.name, title)
  with open(path + ".md") as f:
    print(f.read())


if __name__ == "__main__":
  main()
