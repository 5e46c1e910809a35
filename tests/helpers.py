"""Shared test utilities: build mtf graphs, lower them on a CPU mesh, run."""
import glob
import os
import re
import subprocess
import sys
import types

import mtf_switch  # noqa: F401  (compat shim before mesh_tensorflow)

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import routers
from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import step

tf.disable_eager_execution()

# The repository's root (gin/, docs/, benchmarks/).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        variable_values=None, variables_out=False, devices=None):
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
    devices: None, or a device name per mesh position (virtual CPU devices
      are made for those named).

  Returns:
    dict of numpy values (and the variables' values if asked).
  """
  # No autostacking: it would merge variables into new ones, and the test
  # loads values by the original variables' names.
  lowering = mesh_lib.lower(mtf_graph, mesh, mesh_shape, layout,
                            devices=devices)
  tf_outputs = {k: lowering.export_to_tf_tensor(v) for k, v in outputs.items()}
  masters = {v.name: v.get_master() for v in mtf_graph.all_variables}
  graph = tf.get_default_graph()
  with tf.Session(config=mesh_lib.session_config(graph)) as sess:
    sess.run(tf.global_variables_initializer())
    for name, value in (variable_values or {}).items():
      masters[name].load(value, sess)
    sess.run(lowering.copy_masters_to_slices())
    values = sess.run(tf_outputs)
    if variables_out:
      return values, sess.run(masters)
  return values


def to_bfloat16(array):
  """float32 numpy values rounded to bfloat16 (to nearest, ties to even, as
  TensorFlow's cast), returned as float32."""
  bits = np.asarray(array, np.float32).view(np.uint32)
  rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
  return rounded.astype(np.uint32).view(np.float32)


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


def router_ops(graph):
  """(the router's matmul, its softmax ops) in an mtf graph of one Switch
  layer: what the precision tests read the dtypes of."""
  router_var, = [v for v in graph.trainable_variables if "router" in v.name]
  matmul, = [op for op in graph.operations
             if isinstance(op, mtf.EinsumOperation)
             and router_var.outputs[0] in op.inputs]
  softmax_ops = [op for op in graph.operations
                 if "softmax" in op.name and op.outputs]
  assert softmax_ops
  return matmul, softmax_ops


# The small Switch layer that the layer and dispatch tests apply to
# [BATCH, LENGTH, D_MODEL] inputs.
BATCH, LENGTH, D_MODEL, D_FF = 4, 8, 6, 5


def switch_layer(num_selected_experts=1, policy="argmax", z_loss_coef=0.0,
                 aux_loss_coef=1e-2, **kwargs):
  """A SwitchFeedForward of 4 experts, one group per sequence, with argmax
  routing and no minimum capacity unless told otherwise."""
  config = dict(num_experts=4, hidden_size=D_FF, group_size=LENGTH,
                capacity_factor_train=1.0, capacity_factor_eval=2.0,
                min_capacity=1)
  config.update(kwargs)
  router = routers.TokensChooseRouter(
      num_selected_experts=num_selected_experts, policy=policy,
      z_loss_coef=z_loss_coef, aux_loss_coef=aux_loss_coef)
  return layers.SwitchFeedForward(router=router, **config)


def run_layer(layer, x, sequence_id=None, train_mode=True,
              activation_dtype=tf.float32, mesh_shape="", layout="",
              objective_weights=None, seed=0, variable_values=None):
  """Applies `layer` to numpy x [batch, length, d_model] on a mesh.

  With objective_weights (numpy, x's shape), also the objective
  sum(y * objective_weights) + the layer's losses, and its gradients
  (with respect to the variables and, as "grad_input", to x).
  `seed` is the graph's: it draws the initial weights and the noise;
  variable_values ({name: value}) replace the initial weights.

  Returns:
    (outputs dict with "y", the losses "loss_<i>", the layer's metrics
     "switch/<metric>" (and "objective", "grad/<variable name>"),
     {variable name: (value, [dim names])}).
  """
  tf.reset_default_graph()
  tf.set_random_seed(seed)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  batch_dim = mtf.Dimension("batch", x.shape[0])
  length_dim = mtf.Dimension("length", x.shape[1])
  model_dim = mtf.Dimension("d_model", x.shape[2])
  mtf_x = mtf.cast(import_array(
      mesh, x.astype(np.float32), [batch_dim, length_dim, model_dim]),
                   activation_dtype)
  mtf_sequence_id = None
  if sequence_id is not None:
    mtf_sequence_id = import_array(mesh, sequence_id, [batch_dim, length_dim])
  context = make_context(
      mesh, batch_dim, length_dim, train_mode, activation_dtype,
      mtf_sequence_id, layout or None, mesh_shape or None)
  with tf.variable_scope("switch"):
    y = layer.call(context, mtf_x)
  outputs = {"y": mtf.cast(y, tf.float32)}
  outputs.update(("loss_%d" % i, mtf.cast(l, tf.float32))
                 for i, l in enumerate(context.losses))
  outputs.update(layers.routing_metrics(graph))
  if objective_weights is not None:
    weights = import_array(mesh, objective_weights.astype(np.float32),
                           y.shape.dims)
    objective = mtf.reduce_sum(mtf.cast(y, tf.float32) * weights)
    for loss in context.losses:
      objective += mtf.cast(loss, tf.float32)
    outputs["objective"] = objective
    variables, grads = step.gradients(objective)
    outputs.update(("grad/" + v.name, g) for v, g in zip(variables, grads))
    grad_x, = mtf.gradients([objective], [mtf_x])
    outputs["grad_input"] = mtf.cast(grad_x, tf.float32)
  values, variables = run(graph, mesh, outputs, mesh_shape, layout,
                          variable_values, variables_out=True)
  dims = {v.name: v.shape.dimension_names for v in graph.all_variables}
  return values, {n: (v, dims[n]) for n, v in variables.items()}


def numeric_gradient(fn, value, eps=1e-6):
  """d fn / d value by central differences: fn maps a float64 numpy array
  of value's shape to a float."""
  value = np.asarray(value, np.float64)
  grad = np.zeros_like(value)
  for index in np.ndindex(*value.shape):
    step = np.zeros_like(value)
    step[index] = eps
    grad[index] = (fn(value + step) - fn(value - step)) / (2 * eps)
  return grad


def weights_by_role(variables, num_experts):
  """Numpy weights of a Switch layer in numpy_reference's axis order, found
  by variable name in run_layer's {name: (value, dims)}."""
  def ordered(name, dim_order):
    (value, dims), = [(v, d) for n, (v, d) in variables.items()
                      if n.endswith(name) and "/shared/" not in n]
    return np.transpose(value, [dims.index(d) for d in dim_order])
  weights = {"router_w": ordered("router/kernel",
                                 ["d_model", "experts_unsplit"])}
  expert_in = ["experts", "d_model", "d_ff"]
  if any(n.endswith("wi_1/kernel") for n in variables):  # GEGLU
    weights["wi"] = ordered("wi_0/kernel", expert_in)
    weights["wi_linear"] = ordered("wi_1/kernel", expert_in)
  else:
    weights["wi"] = ordered("wi/kernel", expert_in)
  weights["wo"] = ordered("wo/kernel", ["experts", "d_ff", "d_model"])
  assert weights["wo"].shape[0] == num_experts
  return weights


def shared_ffn(x, variables):
  """The numpy output of a Switch layer's shared experts (ReLU) on x
  [..., d_model], from run_layer's {name: (value, dims)}."""
  def ordered(name, dim_order):
    (value, dims), = [(v, d) for n, (v, d) in variables.items()
                      if n.endswith("/shared/" + name)]
    return np.transpose(value, [dims.index(d) for d in dim_order])
  wi = ordered("wi/kernel", ["d_model", "d_ff"])
  wo = ordered("wo/kernel", ["d_ff", "d_model"])
  return np.maximum(x @ wi, 0.0) @ wo


TINY_SWITCH_LM = """
include 'models/defaults.gin'
d_model = 8
d_ff = 8
num_heads = 2
d_kv = 4
num_layers = 1
dropout_rate = 0.0
transformer.make_layer_stack.layers = [
    @transformer_layers.SelfAttention,
    @mtf_switch.SwitchFeedForward,
    @transformer_layers.SelfAttention,
    @transformer_layers.DenseReluDense,
]
mtf_switch.SwitchFeedForward.num_experts = 4
mtf_switch.SwitchFeedForward.hidden_size = 8
mtf_switch.SwitchFeedForward.group_size = 16
mtf_switch.TokensChooseRouter.policy = "argmax"
"""


def tiny_switch_lm(vocab_size=16, bindings=()):
  """A decoder-only LM with one Switch layer (TINY_SWITCH_LM), plus gin
  `bindings` such as "mtf_switch.SwitchFeedForward.dispatch_mode = 'index'".
  """
  gin.clear_config()
  gin.parse_config(TINY_SWITCH_LM)
  gin.parse_config(list(bindings))
  return transformer.Unitransformer(
      layer_stack=transformer.make_layer_stack(), input_vocab_size=vocab_size,
      output_vocab_size=vocab_size, autoregressive=True)


def lm_loss_and_grads(mesh_shape, layout, tokens, variable_values=None,
                      bindings=(), activation_dtype=tf.float32, devices=None):
  """Loss and gradients of tiny_switch_lm on a (virtual) CPU mesh.

  Returns:
    ({"loss", "grad/<variable>": value}, {variable name: value}).
  """
  model = tiny_switch_lm(bindings=bindings)
  model.layout, model.mesh_shape = layout, mesh_shape
  tf.reset_default_graph()
  tf.set_random_seed(0)
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("batch", tokens.shape[0]),
          mtf.Dimension("length", tokens.shape[1])]
  targets = import_array(mesh, tokens, dims)
  inputs = mtf.shift(targets, offset=1, dim=dims[1], wrap=False)
  _, loss = model.call_simple(
      inputs=inputs, targets=targets, compute_loss=True,
      mode=tf.estimator.ModeKeys.TRAIN,
      variable_dtype=mtf.VariableDType(tf.float32, tf.float32,
                                       activation_dtype))
  loss = mtf.cast(loss, tf.float32)
  variables, grads = step.gradients(loss)
  grads = [mtf.cast(g, tf.float32) for g in grads]
  outputs = {"loss": loss}
  outputs.update(("grad/" + v.name, g) for v, g in zip(variables, grads))
  return run(graph, mesh, outputs, mesh_shape, layout, variable_values,
             variables_out=True, devices=devices)


def mtf_logits(model, model_dir, inputs, targets,
               mode=tf.estimator.ModeKeys.EVAL):
  """Logits [batch, length, vocab] of a model with the latest checkpoint of
  model_dir, for int32 numpy inputs and targets [batch, length]."""
  graph = tf.Graph()
  with graph.as_default():
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    batch_dim = mtf.Dimension("batch", inputs.shape[0])
    logits, _ = model.call_simple(
        inputs=mtf.import_tf_tensor(mesh, tf.constant(inputs), [
            batch_dim, mtf.Dimension("length", inputs.shape[1])]),
        targets=mtf.import_tf_tensor(mesh, tf.constant(targets), [
            batch_dim, mtf.Dimension("length", targets.shape[1])]),
        compute_loss=False, mode=mode,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32))
    lowering = mesh_lib.lower(mtf_graph, mesh)
    tf_logits = lowering.export_to_tf_tensor(logits)
    saver = tf.train.Saver([v.get_master() for v in mtf_graph.all_variables])
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      saver.restore(sess, tf.train.latest_checkpoint(model_dir))
      sess.run(lowering.copy_masters_to_slices())
      return sess.run(tf_logits)


def summary_scalars(event_dir):
  """{tag: last value} of the TensorBoard event files in event_dir."""
  scalars = {}
  for path in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
    for event in tf.train.summary_iterator(path):
      for value in event.summary.value:
        scalars[value.tag] = value.simple_value
  return scalars


def curve_rows(losses, seconds_per_step=1.0, every=100):
  """A study curve (mtf_switch.studies.study rows) of a dense model whose training
  and validation loss after each `every` steps are `losses`."""
  return [dict(step=every * (i + 1),
               train_seconds=seconds_per_step * every * (i + 1),
               train_loss=loss, validation_loss=loss,
               router_confidence=float("nan"))
          for i, loss in enumerate(losses)]


def refused(module, *args, env=None):
  """Runs `python -m module args`, which must refuse them as argparse
  does: exit status 2, stderr one line `<prog>: error: ...`, no traceback.

  TensorFlow's C++ info lines are off (TF_CPP_MIN_LOG_LEVEL=1); its
  warnings and errors are not, so a stray line fails the check.

  Args:
    module: e.g. "mtf_switch.training.train".
    *args: its arguments.
    env: more environment variables.

  Returns:
    the error's text after "<prog>: error: ".
  """
  result = subprocess.run(
      [sys.executable, "-m", module] + list(args), capture_output=True,
      text=True, timeout=300, cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1", **(env or {})))
  prog = "%s: error: " % (module.rsplit(".", 1)[1] + ".py")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert result.stderr.startswith(prog), result.stderr[-3000:]
  assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), (
      result.stderr[-3000:])
  return result.stderr[len(prog):-1]


# A line that reads like a warning or an error: Python's logging
# ("WARNING:tensorflow:...", "ERROR:root:..."), the warnings module
# ("...: UserWarning: ..."), a traceback's last line ("ValueError: ..."),
# TensorFlow's C++ log ("2026-01-01 12:00:00.000000: W tensorflow/...") and
# absl's ("W0101 12:00:00.000000 1234 file.py:1] ...").
WARNING_LINE = re.compile(r"WARNING|Warning|ERROR|Error"
                          r"|^\d{4}-\d\d-\d\d [\d:.]+: [WEF] "
                          r"|^[WEF]\d{4} \d\d:\d\d:\d\d")


def warning_lines(text):
  """The lines of `text` that read like warnings or errors."""
  return [line for line in text.splitlines() if WARNING_LINE.search(line)]


def benchmark(name):
  """The module of benchmarks/<name>.py, loaded by path (benchmarks/ is a
  folder of scripts, not a package; on sys.path, as for the script, so
  that one benchmark imports another)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  folder = os.path.join(REPO, "benchmarks")
  if folder not in sys.path:
    sys.path.append(folder)
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(folder, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
