"""Studies: several models x seeds trained alike, with curves and plots.

A study is configured in gin (`gin/studies/*.gin`) by binding
`mtf_switch.Study`: the models (each a list of gin files and bindings), the
seeds, the task, the shapes of a step and how long to train.  Every model
of a seed trains on the same data in the same order (the examples are
shuffled through a large buffer with one fixed data seed, under the run's
graph seed, so that a seed sets the order along with the initialization,
jitter and dropout) and evaluates every
`eval_every` steps on the same held-out batches, writing one
CSV row per evaluation: steps, training seconds (evaluation excluded),
training loss, validation loss and the routing metrics averaged over the
Switch layers and over the steps since the last row.

A run checkpoints at every evaluation into the work dir and resumes from
there after a kill; a run whose curve is already in the results dir is
skipped, so a study continues on another machine from committed results.
`summarize` turns the curves into a summary CSV, a markdown table and PNG
plots.  `python -m mtf_switch.studies.run_study` is the command.
"""
import csv
import itertools
import json
import os
import time

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import learning_rate_schedules
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch import distillation
from mtf_switch import models as models_lib
from mtf_switch.training import checkpoints
from mtf_switch.training import cluster
from mtf_switch.training import data
from mtf_switch.training import loop
from mtf_switch.training import step as step_lib

CURVE_FIELDS = ("step", "train_seconds", "train_loss", "validation_loss",
                "router_confidence", "router_entropy", "dropped_fraction",
                "expert_fraction_max", "expert_fraction_min", "expert_load")


@gin.configurable(module="mtf_switch")
class Study:
  """What a study trains: models x seeds, on one task, for `steps` steps."""

  def __init__(self, name=gin.REQUIRED, models=gin.REQUIRED, seeds=(1, 2, 3),
               task="mtf_switch_default_span_corruption", steps=1000,
               eval_every=100, eval_batches=20, batch_size=16,
               input_length=64, target_length=16, learning_rate=1e-2,
               baseline="dense", description="", shuffle_buffer_size=100000,
               decay_fraction=0.0, teachers=None, ladder=(),
               upcycle_from=None, continue_from=None):
    """Records the study.

    Args:
      name: str, the study's name (its results folder).
      models: dict from model name to a list of gin files ("*.gin", by name
        on gin's search path) and bindings ("name = value").
      seeds: TensorFlow seeds (initialization, jitter, dropout and the
        training data's order); every model of a seed sees the same data
        in the same order.
      task: seqio task; a task with only "targets" trains a decoder-only
        LM (its inputs are the targets shifted right).
      steps: training steps of each run.
      eval_every: steps between evaluations (and checkpoints).
      eval_batches: validation batches of each evaluation (the first ones of
        the validation split, the same for every run).
      batch_size, input_length, target_length: shapes of a step.
      learning_rate: Adafactor's learning rate (its peak, with decay).
      baseline: the model others are compared with (the dense twin).
      description: one line for the summary table.
      shuffle_buffer_size: examples in the shuffle buffer of the training
        data and of the held-out batches.  It must hold many documents'
        examples: read in order, a long source file fills 16 consecutive
        batches, and the model fits that file instead of the corpus (the
        write-up's first attempt).  0 reads the data in order.
      decay_fraction: the learning rate decays linearly to 0 over this
        fraction of the steps, at the end of the run (mesh-tensorflow's
        `linear_decay`); 0 keeps it constant.
      teachers: dict from a student model to its teacher model, both among
        `models`: the student is the dense twin of its own gin model,
        distilled (Section 4.2, `distillation.Distillation`) from the
        teacher's finished run of the same seed.  Bind
        `mtf_switch.Distillation.fraction_soft` in the student's config to
        change the loss's mix.
      ladder: models in the order they should improve (for example by
        expert count, Figure 4): the summary says whether each ends clearly
        below the one before it.  Reporting only; no run depends on it.
      upcycle_from: dict from a Switch model to a dense model, both among
        `models`: the Switch model starts from the dense model's finished
        run of the same seed by sparse upcycling (`training.upcycling`),
        optimizer and step afresh, and trains `steps` more; its curve's
        steps count the dense run's too.
      continue_from: dict from a model to another of the same weights: it
        starts from that model's finished run likewise (weights only), as
        a baseline for upcycling that trains on in the same way.

    Raises:
      ValueError: on an empty model list, a baseline not among the models,
        eval_every not dividing steps, decay_fraction outside [0, 1], a
        student or teacher (a run and the run it starts from) not among the
        models or a start from a run that starts from another, or a ladder
        of fewer than two models or with one not among the models.
    """
    if not models:
      raise ValueError("study %r has no models" % name)
    if baseline not in models:
      raise ValueError("baseline %r of study %r is not one of its models %s"
                       % (baseline, name, sorted(models)))
    if steps % eval_every:
      raise ValueError("eval_every=%d must divide steps=%d"
                       % (eval_every, steps))
    if not 0.0 <= decay_fraction <= 1.0:
      raise ValueError("decay_fraction=%r must be in [0, 1] (0 keeps the "
                       "learning rate constant)" % (decay_fraction,))
    teachers = dict(teachers or {})
    upcycle_from = dict(upcycle_from or {})
    continue_from = dict(continue_from or {})
    sources = {}
    for what, starts in (("teachers", teachers),
                         ("upcycle_from", upcycle_from),
                         ("continue_from", continue_from)):
      for model, source in starts.items():
        if model not in models or source not in models or model in sources:
          raise ValueError(
              "%s %r of study %r: a run and the run it starts from must both "
              "be among the models %s, and a run starts from one other at "
              "most" % (what, starts, name, sorted(models)))
        sources[model] = source
    if set(sources) & set(sources.values()):
      raise ValueError(
          "study %r: %s start from runs that start from others; a run "
          "starts from a run of its own start only"
          % (name, sorted(m for m in sources if sources[m] in sources)))
    ladder = list(ladder)
    if ladder and (len(ladder) < 2 or not set(ladder) <= set(models)
                   or len(set(ladder)) < len(ladder)):
      raise ValueError(
          "ladder %r of study %r must list two or more distinct models, "
          "each among %s" % (ladder, name, sorted(models)))
    self.name = name
    self.models = dict(models)
    self.seeds = list(seeds)
    self.task = task
    self.steps = steps
    self.eval_every = eval_every
    self.eval_batches = eval_batches
    self.batch_size = batch_size
    self.input_length = input_length
    self.target_length = target_length
    self.learning_rate = learning_rate
    self.baseline = baseline
    self.description = description
    self.shuffle_buffer_size = shuffle_buffer_size
    self.decay_fraction = decay_fraction
    self.teachers = teachers
    self.ladder = ladder
    self.upcycle_from = upcycle_from
    self.continue_from = continue_from
    self.sources = sources

  def runs(self):
    """(model, seed) of every run, seeds outermost: the first seed of every
    model comes before any second seed."""
    return [(model, seed) for seed in self.seeds for model in self.models]

  def quick(self, steps=20, eval_every=10):
    """A copy that runs in minutes: one seed, few steps, two eval batches."""
    return Study(self.name, self.models, self.seeds[:1], self.task, steps,
                 eval_every, 2, self.batch_size, self.input_length,
                 self.target_length, self.learning_rate, self.baseline,
                 self.description, min(self.shuffle_buffer_size, 1000),
                 self.decay_fraction, self.teachers, self.ladder,
                 self.upcycle_from, self.continue_from)

  def learning_rate_at(self, step):
    """The learning rate of a training step (a tf scalar).

    Args:
      step: int or tf scalar, steps done so far.
    """
    if not self.decay_fraction:
      return tf.constant(self.learning_rate, tf.float32)
    return self.learning_rate * learning_rate_schedules.linear_decay(
        step, self.steps, self.decay_fraction)


def run_name(model, seed):
  return "%s-seed%d" % (model, seed)


def curve_path(results_dir, model, seed):
  return os.path.join(results_dir, "curves", run_name(model, seed) + ".csv")


def run_config(study, model, seed):
  """What decides a run's curve: the model's gin config, the seed and the
  study's data and shapes (not its name, model list or seed list), and a
  student's teacher's."""
  config = dict(model=study.models[model], seed=seed, task=study.task,
              steps=study.steps, eval_every=study.eval_every,
              eval_batches=study.eval_batches, batch_size=study.batch_size,
              input_length=study.input_length,
              target_length=study.target_length,
              learning_rate=study.learning_rate,
              shuffle_buffer_size=study.shuffle_buffer_size,
              decay_fraction=study.decay_fraction)
  if model in study.teachers:
    config["teacher"] = run_config(study, study.teachers[model], seed)
  for start, starts in (("upcycled_from", study.upcycle_from),
                        ("continued_from", study.continue_from)):
    if model in starts:
      config[start] = run_config(study, starts[model], seed)
  return config


def finished_checkpoint(study, model, seed, work_dir):
  """The checkpoint of the run's last step in work_dir, or None."""
  checkpoint = checkpoints.latest(os.path.join(work_dir,
                                               run_name(model, seed)))
  if checkpoint and checkpoint.endswith("-%d" % study.steps):
    return checkpoint
  return None


def check_run_dir(run_dir, config, record=True):
  """Records `config` in a new run dir (if `record`), or checks that an
  existing one was made with it.

  Raises:
    ValueError: naming the run dir, if it holds a run of another config
      (resuming it would mix two runs in one curve).
  """
  path = os.path.join(run_dir, "run_config.json")
  if os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f)
    if recorded != json.loads(json.dumps(config)):
      changed = sorted(k for k in set(recorded) | set(config)
                       if recorded.get(k) != json.loads(json.dumps(
                           config)).get(k))
      raise ValueError(
          "%s holds a run of another configuration (%s differ); remove that "
          "folder to start this run afresh, or use another --work_dir"
          % (run_dir, ", ".join(changed)))
    return
  if not record:
    return
  tf.io.gfile.makedirs(run_dir)
  with open(path, "w") as f:
    json.dump(config, f, indent=1, sort_keys=True)


def check_runs(study, work_dir):
  """Checks, before any run starts, what would stop a run as it starts:
  the task, each model's gin config (files found, bindings parsed) and the
  run dirs in work_dir.  Leaves gin cleared.

  Raises:
    ValueError: naming an unknown task, the model whose gin config does
      not parse, or a run dir of another configuration (check_run_dir).
  """
  data.vocab_size(study.task)
  for model in study.models:
    try:
      parse_model_config(study.models[model])
    except ValueError as e:
      raise ValueError("model %s of study %s: %s" % (model, study.name,
                                                     e)) from e
  gin.clear_config()
  for model, seed in study.runs():
    check_run_dir(os.path.join(work_dir, run_name(model, seed)),
                  run_config(study, model, seed), record=False)


def parse_model_config(config):
  """Parses a model's gin files and bindings (gin cleared first).

  Raises:
    ValueError: as `mtf_switch.cli.parse_files`.
  """
  gin.clear_config()
  files = [c for c in config if c.endswith(".gin")]
  bindings = [c for c in config if not c.endswith(".gin")]
  cli.parse_files(files, bindings)


def read_curve(path):
  """A curve CSV as a list of dicts of floats (NaN where empty; step an
  int, expert_load kept as str)."""
  with open(path) as f:
    return [{k: (v if k == "expert_load" else
                 int(v) if k == "step" else float(v or "nan"))
             for k, v in r.items()} for r in csv.DictReader(f)]


def write_curve(path, rows):
  """Writes rows atomically (a kill leaves the old file or the new one)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def _routing_row(metrics_seen):
  """Routing columns from the steps' metric dicts since the last row."""
  # A distilled student's teacher routes too; the row is the student's.
  layers = sorted({name.rsplit("/", 1)[0] for name in metrics_seen[0]
                   if not name.startswith(distillation.TEACHER_SCOPE + "/")
                   } if metrics_seen else ())
  if not layers:
    return {k: "" for k in CURVE_FIELDS[4:]}  # a dense model

  def mean(metric):
    return float(np.mean([[m["%s/%s" % (l, metric)] for l in layers]
                          for m in metrics_seen]))
  loads = [np.mean([m[l + "/expert_fraction"] for m in metrics_seen], 0)
           for l in layers]
  return {
      "router_confidence": mean("router_confidence"),
      "router_entropy": mean("router_entropy"),
      "dropped_fraction": mean("dropped_fraction"),
      "expert_fraction_max": mean("expert_fraction_max"),
      "expert_fraction_min": mean("expert_fraction_min"),
      "expert_load": json.dumps([[round(float(f), 4) for f in load]
                                 for load in loads]),
  }


class RecordCurve(loop.Action):
  """Every eval_every steps: evaluates the last checkpoint on the held-out
  batches and appends a curve row (after a SaveCheckpoint action), its step
  counted from `offset` (the steps of the run it started from, if any)."""

  def __init__(self, study, eval_graph, eval_batches, rows, partial_path,
               out, offset=0):
    super().__init__(study.eval_every, study.steps)
    self.offset = offset
    self.eval_graph = eval_graph
    self.eval_batches = eval_batches
    self.rows = rows
    self.partial_path = partial_path
    self.out = out
    self._losses, self._metrics = [], []
    self._train_seconds = rows[-1]["train_seconds"] if rows else 0.0
    self._since = time.time()

  def needs_all_values(self, step):
    # The curve's routing columns average the metrics of every step.
    return True

  def __call__(self, sess, step, values):
    self._losses.append(float(values["loss"]))
    self._metrics.append(values["metrics"])
    super().__call__(sess, step, values)

  def act(self, sess, step, values):
    self._train_seconds += time.time() - self._since
    row = dict(step=self.offset + step,
               train_seconds=round(self._train_seconds, 2),
               train_loss=float(np.mean(self._losses)),
               validation_loss=self.validation_loss())
    row.update(_routing_row(self._metrics))
    self._append(row)
    self._losses, self._metrics = [], []
    self._since = time.time()

  def validation_loss(self):
    """Mean validation loss per target token of the latest checkpoint."""
    eval_sess, _ = checkpoints.start_session(
        self.eval_graph, os.path.dirname(self.partial_path))
    with eval_sess:
      return -loop.log_likelihood(eval_sess, self.eval_graph,
                                  iter(self.eval_batches))

  def fill_in(self, step):
    """Adds the row of a checkpoint saved just before a kill, whose
    training statistics are lost (left empty); its validation loss is
    measured now."""
    row = {k: "" for k in CURVE_FIELDS}
    row.update(step=self.offset + step, train_seconds=self._train_seconds,
               validation_loss=self.validation_loss())
    self._append(row)

  def _append(self, row):
    self.rows.append(row)
    write_curve(self.partial_path, self.rows)
    print("  step %d/%d  train loss %s  validation loss %.4f  %.1f s"
          % (row["step"], self.offset + self.steps, row["train_loss"] and
             "%.4f" % row["train_loss"], row["validation_loss"],
             self._train_seconds), file=self.out, flush=True)


def run(study, model, seed, work_dir, results_dir, out, mesh_shape="",
        layout="", mesh_devices=None):
  """Trains one (model, seed) of the study, resuming from work_dir, and
  writes its finished curve to results_dir.

  Gin must hold nothing but what this run parses (call in a fresh process
  or after gin.clear_config()).  mesh_shape, layout and mesh_devices
  place it (one device by default; a cluster's tasks' devices, see
  mtf_switch.training.cluster).

  Returns:
    the curve's rows.
  """
  run_dir = os.path.join(work_dir, run_name(model, seed))
  check_run_dir(run_dir, run_config(study, model, seed))
  parse_model_config(study.models[model])
  partial_path = os.path.join(run_dir, "curve.csv")
  vocab_size = data.vocab_size(study.task)
  model_obj = models_lib.make_model(vocab_size, mesh_shape, layout)
  if model in study.teachers:
    model_obj = distillation.Distillation(model_obj)
  source_checkpoint = None
  if model in study.sources:
    source_checkpoint = finished_checkpoint(study, study.sources[model], seed,
                                            work_dir)
    if not source_checkpoint:
      raise ValueError(
          "%s starts from %s, which has no finished run (step %d) in %s: "
          "train it first (run_study does)" % (
              run_name(model, seed), run_name(study.sources[model], seed),
              study.steps, work_dir))
  # An upcycled or continued run trains on where its source stopped: the
  # next batches, its steps counted after the source's.
  offset = study.steps if model in study.sources and (
      model not in study.teachers) else 0
  lengths = (study.batch_size,) + data.step_lengths(
      study.task, study.input_length, study.target_length)
  mesh = dict(mesh_shape=mesh_shape, layout=layout,
              mesh_devices=mesh_devices)
  train_graph = step_lib.build_step_graph(
      model_obj, *lengths, seed=seed, max_to_keep=1,
      make_optimizer=lambda: mtf.optimize.AdafactorOptimizer(
          learning_rate=study.learning_rate_at(tf.train.get_global_step())),
      **mesh)
  eval_graph = step_lib.build_step_graph(model_obj, *lengths, train=False,
                                         seed=seed, **mesh)
  start_from = None
  if source_checkpoint:  # checked against the checkpoint now
    start = (loop.upcycled_start if model in study.upcycle_from
             else loop.fine_tuned_start)
    start_from = start(model_obj, train_graph, source_checkpoint)
  # One data seed for every model: the same batches for all models of a
  # seed (the run's graph seed, current when the training batches are
  # made, also sets their order; the evaluation batches are the same for
  # every run).
  shuffled = dict(shuffle=study.shuffle_buffer_size > 0, seed=0,
                  shuffle_buffer_size=study.shuffle_buffer_size or None)
  eval_batches = list(itertools.islice(data.task_batches(
      study.task, "validation", *lengths, repeat=False, **shuffled),
                                       study.eval_batches))
  sess, checkpoint = checkpoints.start_session(train_graph, run_dir)
  with sess, cluster.lost_tasks(run_dir):
    done = int(sess.run(train_graph.global_step))
    # Rows past the checkpoint belong to steps that will run again.
    rows = ([r for r in read_curve(partial_path)
             if r["step"] <= offset + done]
            if checkpoint and os.path.exists(partial_path) else [])
    if checkpoint:
      print("  resuming from %s (step %d)" % (checkpoint, done), file=out,
            flush=True)
    elif start_from:
      print("  " + start_from(sess), file=out, flush=True)
      if model in study.teachers:
        print("  distilling from %s" % source_checkpoint, file=out,
              flush=True)
    batches = data.task_batches(study.task, "train", *lengths, repeat=True,
                                skip_batches=offset + done, **shuffled)
    record = RecordCurve(study, eval_graph, eval_batches, rows, partial_path,
                         out, offset)
    if done and (not rows or rows[-1]["step"] < offset + done):
      record.fill_in(done)
    loop.train(sess, train_graph, batches, study.steps, [
        loop.StopOnNonFinite(study.steps, run_dir),
        loop.SaveCheckpoint(study.eval_every, study.steps, train_graph,
                            run_dir, out=None),
        record])
  write_curve(curve_path(results_dir, model, seed), rows)
  return rows
