"""A study's curves turned into a summary CSV, a markdown table and plots.

Per model, over its seeds: the final validation loss (mean and standard
deviation) and, against the study's baseline, the steps after which the
model's mean curve reaches the baseline's final mean validation loss
(linear interpolation between evaluations) with the speed-up they give;
along the study's ladder, each model against the one before it.  A
difference counts as clear when it is larger than twice the larger of the
two seed standard deviations (and is not judged with fewer than two seeds
on either side).

No wall-time speed-up: a study's runs are timed one after another, under
whatever else the machine is doing then, so their seconds do not compare
(the capacity study's Switch once came out 2.4x faster in time than its
dense twin from runs timed at different loads).  Step times side by side
come from `benchmarks/study_step_time.py`, which the table's note names.
"""
import csv
import os

import numpy as np

from mtf_switch.studies import study as study_lib

SUMMARY_FIELDS = (
    "model", "seeds", "final_validation_loss", "final_validation_loss_std",
    "delta_vs_baseline", "clear", "steps_to_baseline", "step_speedup",
    "previous", "delta_vs_previous", "clear_vs_previous")


def load_curves(study, results_dir):
  """{model: {seed: rows}} of the runs whose curves are in results_dir."""
  curves = {}
  for model, seed in study.runs():
    path = study_lib.curve_path(results_dir, model, seed)
    if os.path.exists(path):
      curves.setdefault(model, {})[seed] = study_lib.read_curve(path)
  return curves


def mean_curve(runs, key):
  """(steps, mean over seeds, std over seeds) of column `key`; runs are
  truncated to the shortest."""
  length = min(len(rows) for rows in runs.values())
  values = np.array([[r[key] for r in rows[:length]]
                     for rows in runs.values()], dtype=float)
  steps = np.array([r["step"] for r in next(iter(runs.values()))[:length]])
  return steps, values.mean(0), values.std(0)


def first_crossing(xs, ys, level):
  """The first x where the decreasing-ish curve ys reaches `level`, linearly
  interpolated; None if it never does."""
  for i, y in enumerate(ys):
    if y <= level:
      if i == 0:
        return float(xs[0])
      x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], y
      return float(x0 + (x1 - x0) * (y0 - level) / (y0 - y1))
  return None


def loss_at_step(runs, step):
  """The seeds' mean validation loss after `step` training steps, linearly
  interpolated between evaluations; None past the runs' last evaluation
  (and before their first)."""
  steps, loss, _ = mean_curve(runs, "validation_loss")
  if not steps[0] <= step <= steps[-1]:
    return None
  return float(np.interp(step, steps, loss))


def final_loss(runs):
  """(mean, std) over seeds of the runs' last validation loss, as floats."""
  _, loss, std = mean_curve(runs, "validation_loss")
  return float(loss[-1]), float(std[-1])


def is_clear(delta, stds, seeds):
  """Whether a difference of final losses is clear: larger than twice the
  larger of the two models' seed stds; "" (not judged) with fewer than two
  seeds of either."""
  if min(seeds) < 2:
    return ""
  return abs(delta) > 2 * max(stds)


def summarize(study, curves):
  """One summary row per model with runs (dicts of SUMMARY_FIELDS)."""
  rows = []
  base = curves.get(study.baseline)
  base_final = base_std = None
  if base:
    base_final, base_std = final_loss(base)
    base_steps = float(mean_curve(base, "step")[1][-1])
  for model in study.models:
    runs = curves.get(model)
    if not runs:
      continue
    steps, loss, std = mean_curve(runs, "validation_loss")
    row = dict(model=model, seeds=len(runs),
               final_validation_loss=round(float(loss[-1]), 4),
               final_validation_loss_std=round(float(std[-1]), 4))
    if base_final is not None:
      delta = float(loss[-1] - base_final)
      reach_step = first_crossing(steps, loss, base_final)
      row.update(
          delta_vs_baseline=round(delta, 4),
          clear=is_clear(delta, (float(std[-1]), base_std),
                         (len(runs), len(base))),
          steps_to_baseline=(round(reach_step) if reach_step is not None
                             else ""),
          step_speedup=(round(base_steps / reach_step, 2)
                        if reach_step else ""))
    rows.append(row)
  _compare_along_ladder(study, curves, rows)
  return rows


def _compare_along_ladder(study, curves, rows):
  """Adds each ladder model's comparison with the ladder model before it
  that has runs (the `previous`, `delta_vs_previous` and
  `clear_vs_previous` fields)."""
  by_model = {r["model"]: r for r in rows}
  present = [m for m in study.ladder if curves.get(m)]
  for previous, model in zip(present, present[1:]):
    (loss_a, std_a), (loss_b, std_b) = (final_loss(curves[previous]),
                                        final_loss(curves[model]))
    by_model[model].update(
        previous=previous, delta_vs_previous=round(loss_b - loss_a, 4),
        clear_vs_previous=is_clear(
            loss_b - loss_a, (std_a, std_b),
            (len(curves[previous]), len(curves[model]))))


def _yes_no(clear):
  return {True: "yes", False: "no"}.get(clear, "")


def _loss_cell(row):
  """The final loss, with its spread when there are seeds to spread."""
  if row["seeds"] < 2:
    return "%.4f" % row["final_validation_loss"]
  return "%.4f +- %.4f" % (row["final_validation_loss"],
                           row["final_validation_loss_std"])


def markdown_table(study, rows):
  """The summary as a markdown table, with the study's description, and
  the ladder's steps as a second table."""
  header = ("| model | seeds | final val. loss (mean +- std) | vs %s | "
            "clear (> 2 std) | steps to %s's final | step speed-up |"
            % ((study.baseline,) * 2))
  lines = ["%s (%d steps, batch %d, task `%s`)" % (
      study.description or study.name, study.steps, study.batch_size,
      study.task), "", header, "|" + "---|" * 7]
  for r in rows:
    lines.append("| %s | %d | %s | %s | %s | %s | %s |" % (
        r["model"], r["seeds"], _loss_cell(r),
        "%+.4f" % r["delta_vs_baseline"] if "delta_vs_baseline" in r else "",
        _yes_no(r.get("clear")), r.get("steps_to_baseline", ""),
        r.get("step_speedup", "")))
  lines += ["", "No wall-time column: the runs were timed one after another, "
            "at whatever load the machine had. Step times side by side: "
            "`python benchmarks/study_step_time.py --study <the study's gin "
            "file>`."]
  steps = sorted((r for r in rows if r.get("previous")),
                 key=lambda r: study.ladder.index(r["model"]))
  if steps:
    lines += ["", "Along the ladder, each model against the one before it:",
              "", "| model | against | difference | clear (> 2 std) |",
              "|---|---|---|---|"]
    lines += ["| %s | %s | %+.4f | %s |" % (
        r["model"], r["previous"], r["delta_vs_previous"],
        _yes_no(r["clear_vs_previous"])) for r in steps]
  return "\n".join(lines) + "\n"


def plot(study, curves, out_dir):
  """validation.png (loss vs steps and vs training seconds, seed spread
  shaded), routing.png (routing metrics vs steps) and, for a study with a
  ladder, ladder.png (final loss along it); returns the paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
  for model, runs in curves.items():
    steps, loss, std = mean_curve(runs, "validation_loss")
    _, seconds, _ = mean_curve(runs, "train_seconds")
    for ax, xs in zip(axes, (steps, seconds)):
      line, = ax.plot(xs, loss, label="%s (%d seeds)" % (model, len(runs)))
      ax.fill_between(xs, loss - std, loss + std, alpha=0.2,
                      color=line.get_color())
  axes[0].set_xlabel("training steps")
  axes[1].set_xlabel("training seconds (this CPU, evaluation excluded)")
  axes[0].set_ylabel("validation loss (nats per target token)")
  axes[0].legend()
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.suptitle("%s: mean over seeds, +- 1 std shaded" % study.name)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "validation.png"))
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)

  metrics = ("router_confidence", "router_entropy", "dropped_fraction",
             "expert_fraction_max")
  sparse = {m: runs for m, runs in curves.items()
            if np.isfinite([r["router_confidence"] for rows in runs.values()
                            for r in rows]).any()}
  if sparse:
    fig, axes = plt.subplots(1, len(metrics), figsize=(18, 4.5))
    for model, runs in sparse.items():
      for ax, metric in zip(axes, metrics):
        steps, value, _ = mean_curve(runs, metric)
        ax.plot(steps, value, label=model)
        ax.set_title(metric.replace("_", " ") + " (mean over layers)",
                     fontsize=10)
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "routing.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

  ladder = [m for m in study.ladder if curves.get(m)]
  if len(ladder) >= 2:
    losses, stds = zip(*(final_loss(curves[m]) for m in ladder))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(range(len(ladder)), losses, yerr=stds, marker="o",
                capsize=4, label="final validation loss, +- 1 std")
    if curves.get(study.baseline):
      loss, std = final_loss(curves[study.baseline])
      ax.axhline(loss, color="gray", linestyle="--",
                 label="%s (+- 1 std shaded)" % study.baseline)
      ax.axhspan(loss - std, loss + std, color="gray", alpha=0.2)
    ax.set_xticks(range(len(ladder)))
    ax.set_xticklabels(ladder, rotation=20, ha="right")
    ax.set_ylabel("validation loss (nats per target token)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("%s: mean over seeds" % study.name)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "ladder.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  return paths


def write(study, results_dir):
  """Writes summary.csv, summary.md and the plots into results_dir.

  Returns:
    the summary rows.
  """
  curves = load_curves(study, results_dir)
  rows = summarize(study, curves)
  with open(os.path.join(results_dir, "summary.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  with open(os.path.join(results_dir, "summary.md"), "w") as f:
    f.write(markdown_table(study, rows))
  if curves:
    plot(study, curves, results_dir)
  return rows
