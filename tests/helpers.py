"""Shared test utilities: build mtf graphs, lower them on a CPU mesh, run."""
import types

import mtf_switch  # noqa: F401  (compat shim before mesh_tensorflow)

import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import train

tf.disable_eager_execution()


def fake_model(layout=None, mesh_shape=None):
  """Stands in for the Unitransformer that a transformer.Context points at."""
  return types.SimpleNamespace(layout=layout, mesh_shape=mesh_shape,
                               ensemble_dims=[], ensemble_dim=None)


def make_context(mesh, batch_dim, length_dim, train_mode=True,
                 activation_dtype=tf.float32, sequence_id=None, layout=None,
                 mesh_shape=None):
  mode = (tf.estimator.ModeKeys.TRAIN if train_mode
          else tf.estimator.ModeKeys.EVAL)
  return transformer.Context(
      model=fake_model(layout, mesh_shape), mesh=mesh,
      batch_dims=[batch_dim], length_dim=length_dim,
      variable_dtype=mtf.VariableDType(tf.float32, tf.float32,
                                       activation_dtype),
      mode=mode, losses=[], sequence_id=sequence_id)


def run(mtf_graph, mesh, outputs, mesh_shape="", layout="",
        variable_values=None, variables_out=False):
  """Lowers `outputs` (dict of mtf.Tensors) and evaluates them once.

  Args:
    mtf_graph: mtf.Graph.
    mesh: mtf.Mesh.
    outputs: dict from name to mtf.Tensor.
    mesh_shape: mesh shape string.
    layout: layout rules string.
    variable_values: optional dict from variable name to numpy value,
      loaded into the master variables before running.
    variables_out: also return {variable name: value}.

  Returns:
    dict of numpy values (and the variables' values if asked).
  """
  # No autostacking: it would merge variables into new ones, and the test
  # loads values by the original variables' names.
  lowering = mtf.Lowering(mtf_graph,
                          {mesh: train.cpu_mesh_impl(mesh_shape, layout)},
                          autostack=False)
  tf_outputs = {k: lowering.export_to_tf_tensor(v) for k, v in outputs.items()}
  masters = {v.name: v.get_master() for v in mtf_graph.all_variables}
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for name, value in (variable_values or {}).items():
      masters[name].load(value, sess)
    sess.run(lowering.copy_masters_to_slices())
    values = sess.run(tf_outputs)
    if variables_out:
      return values, sess.run(masters)
  return values


def import_array(mesh, array, dims):
  return mtf.import_tf_tensor(mesh, tf.constant(array), dims)


def random_tokens(rng, batch_size, length, vocab_size, num_padding=0):
  """int32 [batch, length] tokens in [2, vocab) with trailing padding."""
  tokens = rng.randint(2, vocab_size, size=(batch_size, length))
  if num_padding:
    tokens[:, length - num_padding:] = 0
  return tokens.astype(np.int32)


def assert_same_loss_and_gradients(got, want, nonzero_grads_containing):
  """`got` and `want` ({"loss", "grad/<variable>": value}) agree, and some
  gradients of variables whose names contain `nonzero_grads_containing` are
  nonzero (so that the agreement is not between zeros)."""
  assert set(got) == set(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6,
                               err_msg=name)
  grads = [n for n in want if n.startswith("grad/")
           and nonzero_grads_containing in n]
  assert grads and all(np.abs(got[n]).sum() > 0 for n in grads)
