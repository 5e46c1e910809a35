"""One training or evaluation step of a model, lowered onto a CPU mesh.

`build_step_graph` returns a `StepGraph`: placeholders in, loss, update,
routing metrics, the targets' log-likelihood and the saver out.  The loop
(`mtf_switch.training.loop`) runs it; `mtf_switch.training.checkpoints` restores and saves it.
"""
import collections

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import tensorflow.compat.v1 as tf

from mtf_switch import guard
from mtf_switch import layers
from mtf_switch.training import mesh as mesh_lib

StepGraph = collections.namedtuple(
    "StepGraph", ["graph", "inputs", "targets", "loss", "train_op",
                  "metrics", "scalars", "token_log_likelihood", "num_tokens",
                  "global_step", "saver", "init_ops", "save_ops",
                  "weights", "state_finite", "noise"])
StepGraph.__doc__ = """A lowered training or evaluation step on CPU.

Attributes:
  graph: the tf.Graph.
  inputs, targets: int32 placeholders [batch, length]; 0 is padding.
  loss: float32 scalar, the model's training loss (with the aux losses).
  train_op: applies one optimizer step and increments global_step (None in
    evaluation).
  metrics: dict from name to tf.Tensor of the Switch layers' routing metrics.
  scalars: dict from TensorBoard tag to tf.Tensor: the loss, in training
    the gradients' global norm (`gradient_norm`), and the scalars the model
    and optimizer exported with mtf.scalar_summary (routing metrics among
    them; `nonfinite_step_skipped` from guard.SkipNonFiniteAdafactorOptimizer).
  token_log_likelihood: float32, summed log p(target token) over the batch's
    real target tokens.
  num_tokens: float32, the number of real target tokens.
  global_step: the tf global step variable.
  saver: tf.train.Saver of the master weights (and optimizer slots) and the
    global step, independent of the mesh.
  init_ops: ops to run, in order, in a new session without a checkpoint.
  save_ops: ops to run before saving (slices back to masters); after a
    restore, run init_ops[-1:] (masters to slices).
  weights: the master tf.Variables of the model's trainable weights (no
    optimizer slots, no step): what fine-tuning restores.
  state_finite: bool scalar, whether every value the saver writes (after
    save_ops) is finite.
  noise: the outputs of the stateful random ops (input jitter, dropout)
    that one training step draws from, once each (empty in evaluation).
"""

# TensorFlow's stateful random ops: each run draws the next values of its
# own stream.
_RANDOM_OP_TYPES = frozenset([
    "RandomUniform", "RandomUniformInt", "RandomStandardNormal",
    "TruncatedNormal", "RandomShuffle", "Multinomial", "RandomGamma",
    "RandomPoisson", "RandomPoissonV2"])


# The activation dtypes a step graph may run in: float32, or bfloat16 as T5
# runs on TPU (the router stays in float32 unless told otherwise,
# Section 2.4; see `routers.Router`).
ACTIVATION_DTYPES = ("float32", "bfloat16")


@gin.configurable("activation_dtype", module="mtf_switch")
def configured_activation_dtype(dtype="float32"):
  """The activation dtype of the step graphs that are not given one: the
  main job's and the studies' (the variables stay float32).

    mtf_switch.activation_dtype.dtype = "bfloat16"

  Args:
    dtype: one of ACTIVATION_DTYPES.

  Returns:
    tf.DType.

  Raises:
    ValueError: on another dtype, naming it.
  """
  if dtype not in ACTIVATION_DTYPES:
    raise ValueError("mtf_switch.activation_dtype.dtype must be one of %s, "
                     "got %r" % (", ".join(ACTIVATION_DTYPES), dtype))
  return tf.as_dtype(dtype)


def gradients(loss):
  """The gradients of a scalar mtf loss with respect to every trainable
  variable of its graph.

  Returns:
    (list of mtf.Variable, list of mtf.Tensor gradients, in that order).
  """
  variables = loss.mesh.graph.trainable_variables
  return variables, mtf.gradients([loss], [v.outputs[0] for v in variables])


def build_step_graph(model, batch_size, input_length, target_length,
                     mesh_shape="", layout="", train=True,
                     make_optimizer=None, activation_dtype=None, seed=1,
                     max_to_keep=3, mesh_devices=None):
  """Builds and lowers one training (or evaluation) step on CPU.

  Args:
    model: a Bitransformer.
    batch_size: int.
    input_length: int.
    target_length: int.
    mesh_shape: mesh shape string; "" is a single device.
    layout: layout rules string.
    train: bool; False builds an evaluation step (eval capacity factor, no
      dropout, no update).
    make_optimizer: a function returning an mtf.optimize.Optimizer, called
      inside the step's graph (an optimizer makes its tensors when built);
      default Adafactor with learning rate 1e-2 (the main job's).
    activation_dtype: tf.float32 or tf.bfloat16; None is the gin setting
      (`configured_activation_dtype`, float32 by default).
    seed: graph-level TensorFlow seed (initializers, dropout, jitter).
    max_to_keep: checkpoints the saver keeps.
    mesh_devices: None, or a device name per mesh position
      (mesh.parse_devices).

  Returns:
    StepGraph.
  """
  check_shape(batch_size, input_length, target_length)
  activation_dtype = activation_dtype or configured_activation_dtype()
  input_vocab_size, output_vocab_size = vocab_sizes(model)
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(seed)
    global_step = tf.train.get_or_create_global_step()
    inputs = tf.placeholder(tf.int32, [batch_size, input_length], "inputs")
    targets = tf.placeholder(tf.int32, [batch_size, target_length],
                             "targets")
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    batch_dim = mtf.Dimension("batch", batch_size)
    mtf_targets = mtf.import_tf_tensor(
        mesh, checked_ids(targets, output_vocab_size),
        [batch_dim, mtf.Dimension("length", target_length)])
    logits, loss = model.call_simple(
        inputs=mtf.import_tf_tensor(
            mesh, checked_ids(inputs, input_vocab_size),
            [batch_dim, mtf.Dimension("length", input_length)]),
        targets=mtf_targets, compute_loss=True,
        mode=(tf.estimator.ModeKeys.TRAIN if train
              else tf.estimator.ModeKeys.EVAL),
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32,
                                         activation_dtype))
    loss = mtf.cast(loss, tf.float32)
    log_likelihood, num_tokens = target_log_likelihood(logits, mtf_targets)
    update_ops = []
    if train:
      optimizer = (make_optimizer() if make_optimizer else
                   mtf.optimize.AdafactorOptimizer(learning_rate=1e-2))
      variables, grads = gradients(loss)
      mtf.scalar_summary("gradient_norm", guard.global_norm(grads))
      update_ops = optimizer.apply_grads(grads, variables)
    metrics = layers.routing_metrics(mtf_graph)

    lowering = mesh_lib.lower(mtf_graph, mesh, mesh_shape, layout,
                              devices=mesh_devices)
    tf_loss = lowering.export_to_tf_tensor(loss)
    train_op = None
    if train:
      # The updates read the global step (Adafactor's decay, the learning
      # rate schedule): it moves on only after them.  Grouped with them, as
      # mesh-tensorflow's utils.run does, the increment could run first and
      # make a step's update depend on the threads' order.
      with tf.control_dependencies(
          [lowering.lowered_operation(op) for op in update_ops]):
        train_op = tf.assign_add(global_step, 1).op
    scalars = dict(
        tf.get_collection(mtf.utils.SCALAR_SUMMARIES_COLLECTION_KEY),
        loss=tf_loss)
    masters = [v.get_master() for v in mtf_graph.all_variables]
    # Relative paths in the `checkpoint` state file: a copied or moved
    # model dir resumes from its own files.
    saver = tf.train.Saver(masters + [global_step], max_to_keep=max_to_keep,
                           save_relative_paths=True)
    state_finite = tf.reduce_all(tf.stack(
        [tf.reduce_all(tf.is_finite(m)) for m in masters
         if m.dtype.base_dtype.is_floating]))
    return StepGraph(
        graph, inputs, targets, tf_loss, train_op,
        {k: lowering.export_to_tf_tensor(v) for k, v in metrics.items()},
        scalars, lowering.export_to_tf_tensor(log_likelihood),
        lowering.export_to_tf_tensor(num_tokens), global_step, saver,
        [tf.global_variables_initializer(),
         lowering.copy_masters_to_slices()],
        [lowering.copy_slices_to_masters()],
        [v.get_master() for v in mtf_graph.trainable_variables],
        state_finite, _noise(train_op) if train else [])


def check_shape(batch_size, input_length, target_length):
  """Refuses an empty batch or sequence before any graph is built.

  Raises:
    ValueError: naming the size that is not a positive int.
  """
  for name, value in (("batch_size", batch_size),
                      ("input_length", input_length),
                      ("target_length", target_length)):
    if not isinstance(value, int) or value < 1:
      raise ValueError("%s=%r: give a positive int (an empty batch or "
                       "sequence has nothing to train on)" % (name, value))


def vocab_sizes(model):
  """(input, output) vocabulary sizes, unpadded, of a Bitransformer or a
  Unitransformer, or of the teacher of a distillation."""
  model = getattr(model, "teacher", model)
  if isinstance(model, transformer.Bitransformer):
    return (model.encoder.input_vocab_size_unpadded,
            model.decoder.output_vocab_size_unpadded)
  return model.input_vocab_size_unpadded, model.output_vocab_size_unpadded


def checked_ids(ids, vocab_size):
  """ids, failing the step (tf.errors.InvalidArgumentError) when one is
  not in [0, vocab_size): past the vocabulary, mesh-tensorflow's embedding
  would read a padding row or nothing, and train on it without a word."""
  bad = tf.logical_or(ids < 0, ids >= vocab_size)
  assertion = tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      ["%s: token ids must be in [0, %d) (the model's vocabulary); got"
       % (ids.op.name, vocab_size), tf.boolean_mask(ids, bad)],
      summarize=8)
  with tf.control_dependencies([assertion]):
    return tf.identity(ids)


def _noise(fetch):
  """Outputs of the stateful random ops that running `fetch` runs."""
  seen, stack, noise = set(), [fetch], []
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    if op.type in _RANDOM_OP_TYPES:
      noise.append(op.outputs[0])
    stack.extend(t.op for t in op.inputs)
    stack.extend(op.control_inputs)
  return noise


def target_log_likelihood(logits, targets):
  """Summed log-likelihood of the real (non-zero) target tokens, and count.

  Args:
    logits: [batch, length, vocab], any float dtype.
    targets: [batch, length], int32; 0 is padding.

  Returns:
    (float32 scalar sum of log p(target), float32 scalar token count).
  """
  vocab_dim = logits.shape.dims[-1]
  log_probs = mtf.log_softmax(mtf.cast(logits, tf.float32), vocab_dim)
  token_log_probs = mtf.reduce_sum(
      log_probs * mtf.one_hot(targets, vocab_dim, dtype=tf.float32),
      reduced_dim=vocab_dim)
  weights = mtf.cast(mtf.not_equal(targets, 0), tf.float32)
  return (mtf.reduce_sum(token_log_probs * weights),
          mtf.reduce_sum(weights))
