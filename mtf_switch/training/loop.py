"""Training and evaluation loops on CPU, with pluggable actions.

`train` runs a StepGraph's training step over batches and, after each step,
every action it was given (as t5x's trainer runs its actions): reporting,
TensorBoard summaries and checkpoints here; a guard or an early stop is
another `Action`.  `TaskTraining` and `evaluate_task` are the main job's
whole runs on a seqio task.
"""
import os
import sys
import time

import gin
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch.training import checkpoints
from mtf_switch.training import cluster
from mtf_switch.training import data
from mtf_switch.training import reporting
from mtf_switch.training import step as step_lib
from mtf_switch.training import upcycling


class Action:
  """Something to do after a training step, every `every` steps and at
  the last step."""

  # Whether `act` reads the step's routing metrics and all its scalars; the
  # loop fetches those only for a step where such an action is due.
  reads_all_values = True

  def __init__(self, every, steps):
    self.every = every
    self.steps = steps

  def due(self, step):
    return step % self.every == 0 or step == self.steps

  def needs_all_values(self, step):
    return self.reads_all_values and self.due(step)

  def __call__(self, sess, step, values):
    """Runs after `step` (1-based) with the fetched `values` (dict: loss,
    metrics, scalars)."""
    if self.due(step):
      self.act(sess, step, values)

  def act(self, sess, step, values):
    raise NotImplementedError


class StopOnNonFinite(Action):
  """Stops training at the first step whose loss, gradient norm or routing
  metrics (the router's logits feed them) are not finite, before any later
  action of that step.  Put it first in the actions.  (An update can also
  break the weights after a finite loss: `checkpoints.save` refuses to
  write those.)

  With guard.SkipNonFiniteAdafactorOptimizer, a step whose gradients were
  not finite changed nothing: it is reported, and training stops only
  after more than `max_skips_in_a_row` such steps in a row.  The run's
  count of skipped steps goes into each step's scalars as `skipped_steps`,
  for the summaries written after it.

  Raises:
    checkpoints.NonFiniteError: naming the step and the first bad value.
  """

  # Every step, it reads the loss and `GUARD_SCALARS`; the routing
  # metrics when another action has them fetched (a non-finite router
  # logit makes the loss non-finite too).
  reads_all_values = False

  def __init__(self, steps, model_dir=None, max_skips_in_a_row=0,
               out=sys.stdout):
    super().__init__(1, steps)
    self.model_dir = model_dir
    self.max_skips_in_a_row = max_skips_in_a_row
    self.out = out
    self.skipped = 0
    self.skips_in_a_row = 0

  def act(self, sess, step, values):
    scalars = values["scalars"]
    if "nonfinite_step_skipped" in scalars:  # the optimizer skips
      skipped = scalars["nonfinite_step_skipped"] > 0.0
      self.skipped += int(skipped)
      self.skips_in_a_row = self.skips_in_a_row + 1 if skipped else 0
      scalars["skipped_steps"] = self.skipped
      if skipped:
        self._report_skip(step)
        return
    bad = [name for name, value in sorted(values["metrics"].items())
           if not np.all(np.isfinite(value))]
    gradient_norm = scalars.get("gradient_norm", 0.0)
    if not np.isfinite(gradient_norm):
      bad.insert(0, "gradient norm %s" % gradient_norm)
    if np.isfinite(values["loss"]) and not bad:
      return
    self._stop(step, "loss %s%s" % (
        values["loss"],
        "; first non-finite: %s" % bad[0] if bad else ""))

  def _report_skip(self, step):
    print("step %d skipped: non-finite gradients, weights unchanged (%d "
          "skipped in this run)" % (step, self.skipped), file=self.out)
    if self.skips_in_a_row > self.max_skips_in_a_row:
      self._stop(step, "%d steps in a row skipped" % self.skips_in_a_row)

  def _stop(self, step, why):
    raise checkpoints.NonFiniteError(
        "step %d: %s; stopped without saving this state (last checkpoint: "
        "%s). A smaller learning rate, or the router in float32 (the "
        "default), usually helps." % (
            step, why, checkpoints.latest(self.model_dir) or "none"))


class ConsoleReport(Action):
  """Prints the progress line and each Switch layer's routing metrics."""

  def __init__(self, every, steps, tokens_per_step, first_step=0,
               out=sys.stdout):
    super().__init__(every, steps)
    self.tokens_per_step = tokens_per_step
    self.out = out
    self._start = (time.time(), first_step)

  def act(self, sess, step, values):
    start_time, start_step = self._start
    rate = (step - start_step) / (time.time() - start_time)
    print(reporting.progress_line(step, self.steps, values["loss"], rate,
                                  self.tokens_per_step), file=self.out)
    for line in reporting.summarize_metrics(values["metrics"]):
      print(line, file=self.out)
    self.out.flush()


class WriteSummaries(Action):
  """Writes the step's scalars (loss, routing metrics) for TensorBoard."""

  def __init__(self, every, steps, model_dir):
    super().__init__(every, steps)
    self.writer = tf.summary.FileWriter(model_dir)

  def act(self, sess, step, values):
    self.writer.add_summary(reporting.scalar_summary(values["scalars"]),
                            step)
    self.writer.flush()


class SaveCheckpoint(Action):
  """Saves a checkpoint to model_dir (and says so on `out`, unless None)."""

  reads_all_values = False

  def __init__(self, every, steps, step_graph, model_dir, out=sys.stdout):
    super().__init__(every, steps)
    self.step_graph = step_graph
    self.model_dir = model_dir
    self.out = out

  def act(self, sess, step, values):
    path = checkpoints.save(sess, self.step_graph, self.model_dir)
    if self.out:
      print("saved %s" % path, file=self.out)


# The scalars every step fetches, for StopOnNonFinite.
GUARD_SCALARS = ("gradient_norm", "nonfinite_step_skipped")


def step_fetches(step_graph, all_values):
  """What `train` fetches for a step: the train op, the loss and
  `GUARD_SCALARS`, and with `all_values` the routing metrics and every
  scalar."""
  if all_values:
    return {"loss": step_graph.loss, "train_op": step_graph.train_op,
            "metrics": step_graph.metrics, "scalars": step_graph.scalars}
  return {"loss": step_graph.loss, "train_op": step_graph.train_op,
          "metrics": {}, "scalars": {
              k: v for k, v in step_graph.scalars.items()
              if k in GUARD_SCALARS}}


def train(sess, step_graph, batches, steps, actions=()):
  """Trains until the global step reaches `steps`.

  A step fetches its loss and `GUARD_SCALARS`; the routing metrics and the
  other scalars only when an action that reads them is due (fetching them
  every step cost 0.5-3.6 ms of a 30-110 ms step: benchmarks/peer_hf.py).

  Args:
    sess: tf.Session of step_graph, initialized or restored.
    step_graph: step.StepGraph with a train_op.
    batches: iterator of {"inputs", "targets"} numpy batches, positioned at
      the session's global step.
    steps: total steps, counting those already done.
    actions: Actions run after each step, in order.

  Returns:
    list of (step, loss) of the steps run now.
  """
  fetches = {all_values: step_fetches(step_graph, all_values)
             for all_values in (False, True)}
  step = int(sess.run(step_graph.global_step))
  history = []
  while step < steps:
    batch = next(batches)
    all_values = any(a.needs_all_values(step + 1) for a in actions)
    values = sess.run(fetches[all_values],
                      {step_graph.inputs: batch["inputs"],
                       step_graph.targets: batch["targets"]})
    step += 1
    history.append((step, float(values["loss"])))
    for action in actions:
      action(sess, step, values)
  return history


def log_likelihood(sess, step_graph, batches, max_batches=None):
  """Mean log p per real target token over (at most max_batches) batches."""
  total, count = 0.0, 0.0
  for i, batch in enumerate(batches):
    if i == max_batches:
      break
    batch_total, batch_count = sess.run(
        [step_graph.token_log_likelihood, step_graph.num_tokens],
        {step_graph.inputs: batch["inputs"],
         step_graph.targets: batch["targets"]})
    total += batch_total
    count += batch_count
  return total / max(count, 1.0)


class TaskTraining:
  """The main job's training run on a seqio task: set up and checked when
  made, before anything is written to model_dir; then `train`.

  Resumes from the latest checkpoint in model_dir, or starts from
  `init_checkpoint`'s weights, or afresh; trains with console reports,
  TensorBoard summaries and checkpoints.  Everything that can refuse the
  run happens in the constructor (the vocabularies and the initial
  checkpoint are checked before the step graph is built), so that a
  command can refuse it as a bad value (`mtf_switch.cli.refusals`) and
  let errors of the training itself keep their tracebacks.
  """

  def __init__(self, model, model_dir, task_name, batch_size, input_length,
               target_length, mesh_shape="", layout="", make_optimizer=None,
               init_checkpoint=None, mesh_devices=None, upcycle_from=None):
    """Checks the run, builds its step graph and starts its session.

    Args:
      init_checkpoint: a checkpoint or model dir whose weights start a new
        run (fine-tuning: optimizer state and step start afresh; a model
        with an `init_assignment(step_graph, checkpoint)` method, such as
        `distillation.Distillation`, says which weights); ignored when
        model_dir already has a checkpoint (the run resumes).
      upcycle_from: instead of init_checkpoint, a dense model's checkpoint
        or model dir that this Switch model starts from by sparse
        upcycling (`upcycling`); ignored likewise when resuming.
      mesh_devices: None, or a device name per mesh position
        (mesh.parse_devices).
      (the others: as their names say.)

    Raises:
      ValueError: if init_checkpoint (upcycle_from) is missing, was trained
        with another vocabulary or does not hold this model's weights (the
        dense weights this model's upcycling needs), or if model_dir's
        run used another vocabulary or has no readable checkpoint among
        its checkpoints.
    """
    self.model = model
    self.model_dir = model_dir
    self.task_name = task_name
    self.batch_size = batch_size
    self.input_length = input_length
    self.target_length = target_length
    self.start_from = None
    init_from = None
    if checkpoints.latest(model_dir):
      data.check_vocabulary(model_dir, task_name)  # resuming
    elif init_checkpoint or upcycle_from:
      init_from = checkpoints.resolve(init_checkpoint or upcycle_from)
      data.check_vocabulary(os.path.dirname(init_from), task_name)
    self.step_graph = step_lib.build_step_graph(
        model, batch_size, input_length, target_length, mesh_shape, layout,
        make_optimizer=make_optimizer, mesh_devices=mesh_devices)
    if init_from:
      self.start_from = (upcycled_start if upcycle_from else fine_tuned_start)(
          model, self.step_graph, init_from)
    # Last: a model dir whose checkpoints are all unreadable is refused
    # here; `train` closes the session.
    self.sess, self.checkpoint = checkpoints.start_session(self.step_graph,
                                                           model_dir)
    self.first_step = int(self.sess.run(self.step_graph.global_step))

  def train(self, steps, log_every=10, save_every=100, max_skips_in_a_row=0,
            out=sys.stdout):
    """Trains to `steps` total steps, counting those of a resumed run.

    Args:
      max_skips_in_a_row: with an optimizer that skips non-finite steps
        (guard.SkipNonFiniteAdafactorOptimizer), how many may come in a row
        before training stops (StopOnNonFinite).
      (the others: as their names say.)

    Returns:
      list of (step, loss) of the steps run now.

    Raises:
      checkpoints.NonFiniteError: as StopOnNonFinite and checkpoints.save.
      cluster.TaskLostError: naming a cluster task that stopped answering
        (the checkpoints written before stay the latest).
    """
    model_dir, step_graph = self.model_dir, self.step_graph
    first_step = self.first_step
    tf.io.gfile.makedirs(model_dir)
    data.write_vocabulary_record(model_dir, self.task_name)
    write_operative_config(model_dir)
    with self.sess as sess, cluster.lost_tasks(model_dir):
      if self.checkpoint:
        print("resuming from %s (step %d)" % (self.checkpoint, first_step),
              file=out)
      elif self.start_from:
        print(self.start_from(sess), file=out)
      batches = data.task_batches(self.task_name, "train", self.batch_size,
                                  self.input_length, self.target_length,
                                  skip_batches=first_step)
      return train(sess, step_graph, batches, steps, self.actions(
          steps, log_every, save_every, max_skips_in_a_row, out))

  def actions(self, steps, log_every, save_every, max_skips_in_a_row, out):
    """The actions after each step, in order (a subclass adds its own)."""
    tokens_per_step = self.batch_size * (self.input_length +
                                         self.target_length)
    return [
        StopOnNonFinite(steps, self.model_dir, max_skips_in_a_row, out),
        ConsoleReport(log_every, steps, tokens_per_step, self.first_step,
                      out),
        WriteSummaries(log_every, steps, self.model_dir),
        SaveCheckpoint(save_every, steps, self.step_graph, self.model_dir,
                       out)]


def write_operative_config(model_dir):
  """Writes the gin bindings the run's model used to
  model_dir/operative_config.gin (T5's convention, for sharing and
  reproducing a run)."""
  with tf.io.gfile.GFile(os.path.join(model_dir, "operative_config.gin"),
                         "w") as f:
    f.write(gin.operative_config_str())


def fine_tuned_start(model, step_graph, checkpoint):
  """How a new run starts from another run's weights (fine-tuning,
  distillation): checked now, against the checkpoint.

  Returns:
    a function of a session that restores them and says what it did.

  Raises:
    ValueError: as init_assignment.
  """
  assignment = init_assignment(model, step_graph, checkpoint)

  def start(sess):
    checkpoints.restore_weights(sess, step_graph, checkpoint, assignment)
    return ("weights from %s (optimizer state and step start afresh)"
            % checkpoint)
  return start


def upcycled_start(model, step_graph, checkpoint):
  """How a new run of a Switch model starts from a dense checkpoint
  (sparse upcycling): checked now, against the checkpoint.

  Returns:
    a function of a session that loads the upcycled weights and says what
    it did.

  Raises:
    ValueError: as upcycling.plan.
  """
  del model  # the step graph's weights say everything
  copies = upcycling.plan(
      {w.op.name: w.shape.as_list() for w in step_graph.weights}, checkpoint)

  def start(sess):
    upcycling.restore(sess, step_graph, checkpoint, copies)
    return ("weights upcycled from %s (each expert a copy of the dense FFN "
            "it replaces; routers, optimizer state and step start afresh)"
            % checkpoint)
  return start


def init_assignment(model, step_graph, checkpoint):
  """What a new run restores from a checkpoint, checked against it: the
  model's own choice (a distillation restores its teacher and part of its
  student), else every weight under its own name (fine-tuning).

  Returns:
    list of (checkpoint name, variable), for checkpoints.restore_weights.

  Raises:
    ValueError: if the checkpoint does not hold those weights.
  """
  if hasattr(model, "init_assignment"):
    assignment = model.init_assignment(step_graph, checkpoint)
  else:
    assignment = checkpoints.same_names(step_graph)
  checkpoints.check_weights(checkpoint, assignment)
  return assignment


def evaluate_task(model, model_dir, task_name, batch_size, input_length,
                  target_length, mesh_shape="", layout="", max_batches=20,
                  mesh_devices=None):
  """Validation negative log perplexity (mean log p per target token).

  Restores the latest checkpoint of model_dir; without one (or with
  model_dir None), evaluates the freshly initialized model.
  """
  step_graph = step_lib.build_step_graph(
      model, batch_size, input_length, target_length, mesh_shape, layout,
      train=False, mesh_devices=mesh_devices)
  sess, _ = checkpoints.start_session(step_graph, model_dir)
  with sess, cluster.lost_tasks(model_dir):
    return log_likelihood(
        sess, step_graph,
        data.task_batches(task_name, "validation", batch_size, input_length,
                          target_length, repeat=False),
        max_batches)
