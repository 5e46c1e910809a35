"""Checkpoints of a StepGraph: start a session from one, save one, and
restore another run's weights (fine-tuning, distillation).

Checkpoints hold the master weights (and optimizer slots) and the global
step, one entry per model variable whatever the mesh (see
`mtf_switch.training.mesh.lower`), so a run can resume on another mesh.  A save
refuses a non-finite state; a resume skips a corrupt latest checkpoint for
the newest intact one; the state file holds relative paths, so a model dir
can move.
"""
import os
import sys

import tensorflow.compat.v1 as tf

from mtf_switch.training import cluster
from mtf_switch.training import mesh as mesh_lib


def latest(model_dir):
  """The newest checkpoint path in model_dir, or None."""
  return (model_dir or None) and tf.train.latest_checkpoint(model_dir)


def start_session(step_graph, model_dir, out=sys.stderr):
  """A session with the newest readable checkpoint of model_dir restored.

  A corrupt or partial checkpoint (e.g. a kill during a save, a truncated
  copy) is named on `out` and the next older one is tried.  After a restore
  at step n, the training step's random ops draw n times, so that the run
  goes on with the noise (input jitter, dropout) an uninterrupted run would
  draw; the caller restores the data position (skipping n batches).

  Args:
    step_graph: step.StepGraph (or anything with graph, saver, init_ops).
    model_dir: directory of checkpoints, or None for fresh weights.
    out: file for the fallback messages.

  Returns:
    (tf.Session, the checkpoint path restored or None).

  Raises:
    ValueError: naming them, if model_dir has checkpoints and none reads.
    cluster.TaskLostError: naming a cluster task of the graph that does
      not answer.
  """
  sess = tf.Session(cluster.session_target(step_graph.graph),
                    graph=step_graph.graph,
                    config=mesh_lib.session_config(step_graph.graph))
  candidates = _newest_first(model_dir)
  if not candidates:
    for op in step_graph.init_ops:
      sess.run(op)
    return sess, None
  sess.run(step_graph.init_ops[0])  # slices and anything not saved
  for i, checkpoint in enumerate(candidates):
    try:
      step_graph.saver.restore(sess, checkpoint)
    except (tf.errors.OpError, ValueError) as e:
      print("checkpoint %s is unreadable (%s)%s" % (
          checkpoint, str(e).splitlines()[0][:200],
          "; trying %s" % candidates[i + 1] if i + 1 < len(candidates)
          else ""), file=out, flush=True)
      continue
    sess.run(step_graph.init_ops[1])  # masters to slices
    _replay_noise(sess, step_graph)
    return sess, checkpoint
  sess.close()
  raise ValueError("no checkpoint in %s is readable (%s); move them away to "
                   "start afresh" % (model_dir, ", ".join(candidates)))


def _replay_noise(sess, step_graph):
  """Advances the random streams of step_graph's training step to its
  restored global step."""
  noise = getattr(step_graph, "noise", None)
  if noise:
    for _ in range(int(sess.run(step_graph.global_step))):
      sess.run(noise)


def _newest_first(model_dir):
  """The checkpoints the state file of model_dir lists, newest first."""
  state = model_dir and tf.train.get_checkpoint_state(model_dir)
  if not state:
    return []
  # get_checkpoint_state has already joined relative paths to model_dir.
  paths = list(state.all_model_checkpoint_paths) or [
      state.model_checkpoint_path]
  return [p for p in reversed(paths) if tf.io.gfile.exists(p + ".index")]


class NonFiniteError(ValueError):
  """Training produced a non-finite loss, metric or state."""


def save(sess, step_graph, model_dir):
  """Writes model_dir/model.ckpt-<global step>; returns its path.

  Raises:
    NonFiniteError: if a weight or optimizer slot is not finite; nothing
      is written (the last good checkpoint stays the latest).
  """
  sess.run(step_graph.save_ops)
  if not sess.run(step_graph.state_finite):
    raise NonFiniteError(
        "step %d: the weights or optimizer slots are not finite; stopped "
        "without saving them (last checkpoint: %s)"
        % (sess.run(step_graph.global_step), latest(model_dir) or "none"))
  return step_graph.saver.save(
      sess, os.path.join(model_dir, "model.ckpt"),
      global_step=sess.run(step_graph.global_step), write_meta_graph=False)


def resolve(checkpoint_or_dir):
  """A checkpoint path from a path or a directory (its latest checkpoint).

  Raises:
    ValueError: naming it, if there is no checkpoint there.
  """
  if tf.io.gfile.isdir(checkpoint_or_dir):
    path = tf.train.latest_checkpoint(checkpoint_or_dir)
  elif tf.io.gfile.exists(checkpoint_or_dir + ".index"):
    path = checkpoint_or_dir
  else:
    path = None
  if not path:
    raise ValueError("no checkpoint at %r: give a model dir holding one or a "
                     "checkpoint path such as DIR/model.ckpt-1000"
                     % (checkpoint_or_dir,))
  return path


def same_names(step_graph):
  """(checkpoint name, master variable) of step_graph's weights under their
  own names (no optimizer slots, no step): what fine-tuning restores."""
  return [(weight.op.name, weight) for weight in step_graph.weights]


def check_weights(checkpoint, assignment):
  """Checks that a checkpoint holds every name of `assignment`, in shape.

  Args:
    checkpoint: a checkpoint path.
    assignment: list of (checkpoint name, tf.Variable); a name may fill
      several variables.

  Raises:
    ValueError: naming the first weights missing or of another shape.
  """
  shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
  missing, mismatched = [], []
  for name, variable in sorted(assignment, key=lambda pair: pair[0]):
    shape = variable.shape.as_list()
    if name not in shapes:
      missing.append(name)
    elif shapes[name] != shape:
      mismatched.append("%s is %s there, %s here" % (name, shapes[name],
                                                     shape))
  if missing or mismatched:
    raise ValueError(
        "%s does not fit this model: %s" % (checkpoint, "; ".join(
            (["missing " + ", ".join(missing[:5])] if missing else []) +
            mismatched[:5])))


def restore_weights(sess, step_graph, checkpoint, assignment):
  """Restores some weights from another run's checkpoint (the start of a
  fine-tuning or distillation run): optimizer slots and step start afresh.

  Args:
    sess: a session of step_graph, its variables initialized.
    step_graph: step.StepGraph.
    checkpoint: a checkpoint path.
    assignment: list of (checkpoint name, master variable).

  Raises:
    ValueError: as check_weights.
  """
  check_weights(checkpoint, assignment)
  # A Saver maps each name to one variable: one Saver per use of a name.
  rounds = []
  for name, variable in assignment:
    free = next((r for r in rounds if name not in r), None)
    if free is None:
      free = {}
      rounds.append(free)
    free[name] = variable
  with step_graph.graph.as_default():
    savers = [tf.train.Saver(r) for r in rounds]
  for saver in savers:
    saver.restore(sess, checkpoint)
  sess.run(step_graph.init_ops[-1])  # masters to slices
