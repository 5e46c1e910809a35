"""Checkpoints of a StepGraph: start a session from one, save one.

Checkpoints hold the master weights (and optimizer slots) and the global
step, one entry per model variable whatever the mesh (see
`mtf_switch.mesh.lower`), so a run can resume on another mesh.
"""
import os

import tensorflow.compat.v1 as tf


def latest(model_dir):
  """The newest checkpoint path in model_dir, or None."""
  return (model_dir or None) and tf.train.latest_checkpoint(model_dir)


def start_session(step_graph, model_dir):
  """A session with the latest checkpoint of model_dir restored, if any.

  Args:
    step_graph: step.StepGraph.
    model_dir: directory of checkpoints, or None for fresh weights.

  Returns:
    (tf.Session, the checkpoint path restored or None).
  """
  sess = tf.Session(graph=step_graph.graph)
  checkpoint = latest(model_dir)
  if checkpoint:
    sess.run(step_graph.init_ops[0])  # slices and anything not saved
    step_graph.saver.restore(sess, checkpoint)
    sess.run(step_graph.init_ops[1])  # masters to slices
  else:
    for op in step_graph.init_ops:
      sess.run(op)
  return sess, checkpoint


def save(sess, step_graph, model_dir):
  """Writes model_dir/model.ckpt-<global step>; returns its path."""
  sess.run(step_graph.save_ops)
  return step_graph.saver.save(
      sess, os.path.join(model_dir, "model.ckpt"),
      global_step=sess.run(step_graph.global_step), write_meta_graph=False)
