"""Sparse upcycling: a Switch model started from a dense checkpoint.

Komatsuzaki et al., "Sparse Upcycling: Training Mixture-of-Experts from
Dense Checkpoints" (ICLR 2023), Section 3: every expert of a Switch layer
starts as a copy of the dense FFN it replaces, the router starts afresh,
and every other weight is copied; the optimizer and the step start afresh,
as in fine-tuning.

The dense and the Switch model are matched by the order of their
sublayers, not by name: a stack's sublayers `<stack>/block_<i>/layer_<j>`
in (block, layer) order are paired one to one.  A Switch stack of
`stacks/switch_every_other.gin` (blocks of dense and Switch FFN pairs)
thus takes T5.1.1's blocks of one attention and one FFN two at a time.  A
SwitchFeedForward's `wi` (or `wi_0`, `wi_1`) and `wo` kernels
[experts, ...] take the paired DenseReluDense's kernels of the same name,
one copy per expert; its shared experts' FFN (`shared/wi`, `shared/wo`)
takes them as they are, if it is as wide; its router (and a
BiasBalancedRouter's bias) is not in the dense model and keeps its
initialization.

`plan` checks the pairing and the shapes before anything is written;
`restore` loads a plan into a session's weights (the main job, the study
runner); `write_checkpoint` writes the upcycled weights under the Switch
model's names for T5's binary and `MtfModel`, whose `init_checkpoint`
restores every weight a checkpoint holds by name (`upcycled_checkpoint`,
in gin: `upcycle.gin`).
"""
import collections
import os
import re

from absl import flags
import gin
import mesh_tensorflow as mtf
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import models
from mtf_switch.training import checkpoints

# <stack>/block_<i>/layer_<j>/<kind>/<rest>
_SUBLAYER = re.compile(r"^(?P<stack>.+?)/block_(?P<block>\d+)/"
                       r"layer_(?P<layer>\d+)/(?P<kind>[^/]+)/(?P<rest>.+)$")
SWITCH, DENSE_FFN, _NORM = "SwitchFeedForward", "DenseReluDense", "rms_norm"
# A SwitchFeedForward's weights that are not in the dense model, and the
# scope of its shared experts (one dense FFN).
_NEW = re.compile(r"^router/")
_SHARED = "shared/"

Copy = collections.namedtuple("Copy", ["name", "source", "experts"])
Copy.__doc__ = """One weight of the upcycled model.

Attributes:
  name: the Switch model's weight.
  source: the dense checkpoint's weight it starts from.
  experts: 0 to copy the source as it is; else the number of experts, each
    a copy of the source (the weight is [experts] + the source's shape).
"""


def _sublayers(names):
  """{stack: [(block, layer, kind)] in order} of the names' sublayers (a
  sublayer's kind is its weights' scope other than its layer norm's)."""
  kinds = collections.defaultdict(set)
  for name in names:
    m = _SUBLAYER.match(name)
    if m:
      kinds[m["stack"], int(m["block"]), int(m["layer"])].add(m["kind"])
  found = collections.defaultdict(list)
  for (stack, block, layer), scopes in sorted(kinds.items()):
    kind = "/".join(sorted(scopes - {_NORM})) or _NORM
    found[stack].append((block, layer, kind))
  return found


def _sublayer_name(stack, block, layer):
  return "%s/block_%03d/layer_%03d" % (stack, block, layer)


def _pairing(switch_names, dense_names, checkpoint):
  """{Switch sublayer prefix: dense sublayer prefix}, by order per stack.

  Raises:
    ValueError: naming the stack or sublayer that has no counterpart.
  """
  switch, dense = _sublayers(switch_names), _sublayers(dense_names)
  pairs = {}
  for stack, layers in sorted(switch.items()):
    sources = dense.get(stack, [])
    if len(sources) != len(layers):
      raise ValueError(
          "%s cannot be upcycled into this model: its %s stack has %d "
          "sublayers, this model's %d (upcycling pairs them in order; give "
          "the Switch model the dense model's number of layers)"
          % (checkpoint, stack, len(sources), len(layers)))
    for (block, layer, kind), (d_block, d_layer, d_kind) in zip(layers,
                                                                 sources):
      want = DENSE_FFN if kind == SWITCH else kind
      if d_kind != want:
        raise ValueError(
            "%s cannot be upcycled into this model: %s (%s) would start "
            "from %s, a %s" % (checkpoint, _sublayer_name(stack, block, layer),
                               kind, _sublayer_name(stack, d_block, d_layer),
                               d_kind))
      pairs[_sublayer_name(stack, block, layer)] = _sublayer_name(
          stack, d_block, d_layer)
  return pairs


def plan(weights, checkpoint):
  """What each weight of a Switch model starts from in a dense checkpoint.

  Args:
    weights: {name: shape (list of int)} of the Switch model's weights.
    checkpoint: a dense checkpoint path.

  Returns:
    list of Copy, one per weight that the checkpoint provides (the routers
    are not among them).

  Raises:
    ValueError: naming the weight (or sublayer) that is missing from the
      checkpoint or does not fit it, before anything is written.
  """
  shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
  pairs = _pairing(weights, shapes, checkpoint)
  copies = []
  for name, shape in sorted(weights.items()):
    source = _source(name, shape, pairs)
    if source is None:
      continue  # a router starts afresh
    if source.source not in shapes:
      raise ValueError("%s cannot be upcycled into this model: it has no %s "
                       "(for %s)" % (checkpoint, source.source, name))
    want = list(shape[1:]) if source.experts else list(shape)
    if list(shapes[source.source]) != want:
      raise ValueError(
          "%s cannot be upcycled into this model: %s is %s there; %s (%s) "
          "needs %s" % (checkpoint, source.source, shapes[source.source],
                        name, shape,
                        want if source.experts else "the same shape"))
    copies.append(source)
  return copies


def _source(name, shape, pairs):
  """The Copy of one Switch-model weight (None for a router's), its
  source not yet checked."""
  m = _SUBLAYER.match(name)
  if not m:
    return Copy(name, name, 0)  # embeddings, final norms, logits
  prefix = pairs[_sublayer_name(m["stack"], int(m["block"]), int(m["layer"]))]
  if m["kind"] != SWITCH:
    return Copy(name, "%s/%s/%s" % (prefix, m["kind"], m["rest"]), 0)
  if _NEW.match(m["rest"]):
    return None
  if m["rest"].startswith(_SHARED):  # one FFN, as the dense one
    return Copy(name, "%s/%s/%s" % (prefix, DENSE_FFN,
                                    m["rest"][len(_SHARED):]), 0)
  return Copy(name, "%s/%s/%s" % (prefix, DENSE_FFN, m["rest"]), shape[0])


def value(reader, copy):
  """The numpy value of one Copy, from a checkpoint reader."""
  source = reader.get_tensor(copy.source)
  if not copy.experts:
    return source
  return np.broadcast_to(source, (copy.experts,) + source.shape).copy()


def restore(sess, step_graph, checkpoint, copies):
  """Loads the upcycled weights into a session's master weights, then the
  slices (optimizer slots and step stay as initialized)."""
  reader = tf.train.load_checkpoint(checkpoint)
  masters = {w.op.name: w for w in step_graph.weights}
  for copy in copies:
    master = masters[copy.name]
    # The initializer, fed the value: no new op in a built graph.
    sess.run(master.initializer,
             {master.initial_value: value(reader, copy)})
  sess.run(step_graph.init_ops[-1])  # masters to slices


def write_checkpoint(checkpoint, copies, out_dir):
  """Writes the upcycled weights as `out_dir/model.ckpt-0` (no router, no
  optimizer slots, no step): T5's `init_checkpoint` restores them by name.

  Returns:
    the checkpoint path.
  """
  reader = tf.train.load_checkpoint(checkpoint)
  graph = tf.Graph()
  with graph.as_default():
    variables = [tf.Variable(value(reader, c), name=c.name, trainable=False)
                 for c in copies]
    saver = tf.train.Saver(variables, sharded=False)
    with tf.Session() as sess:
      sess.run(tf.variables_initializer(variables))
      tf.io.gfile.makedirs(out_dir)
      return saver.save(sess, os.path.join(out_dir, "model.ckpt"),
                        global_step=0, write_meta_graph=False)


def weight_shapes(model):
  """{name: shape} of a model's trainable weights (its mtf graph only,
  built on a batch of one, nothing lowered)."""
  with tf.Graph().as_default():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    batch, length = mtf.Dimension("batch", 1), mtf.Dimension("length", 8)
    ids = mtf.zeros(mesh, [batch, length], tf.int32)
    model.call_simple(
        inputs=ids, targets=ids, compute_loss=True,
        mode=tf.estimator.ModeKeys.TRAIN,
        variable_dtype=mtf.VariableDType(tf.float32, tf.float32, tf.float32))
    return {v.name: v.shape.to_integer_list
            for v in mesh.graph.trainable_variables}


@gin.configurable(module="mtf_switch")
def upcycled_checkpoint(dense_checkpoint=gin.REQUIRED, out_dir=None,
                        model_type="bitransformer"):
  """Writes the gin model's upcycled weights from a dense checkpoint; for
  T5's binary (`upcycle.gin` binds `utils.run.init_checkpoint` to it) and
  `MtfModel` (`init_checkpoint=upcycled_checkpoint(...)`).

  Args:
    dense_checkpoint: a dense model's checkpoint or model dir (T5.1.1's,
      the main job's, T5's).
    out_dir: where to write it; default: T5's binary's --model_dir +
      "/upcycled".  A checkpoint already there is used as it is (a
      restarted job does not write it again).
    model_type: T5's model type (the vocabulary size is the dense
      checkpoint's embedding's).

  Returns:
    the upcycled checkpoint's path.

  Raises:
    ValueError: naming the weight that does not fit (`plan`), or asking
      for out_dir outside T5's binary.
  """
  if out_dir is None:
    if not ("model_dir" in flags.FLAGS and flags.FLAGS.is_parsed()
            and flags.FLAGS.model_dir):
      raise ValueError("mtf_switch.upcycled_checkpoint.out_dir: give a "
                       "folder for the upcycled checkpoint (outside T5's "
                       "binary there is no --model_dir to put it in)")
    out_dir = os.path.join(flags.FLAGS.model_dir, "upcycled")
  written = tf.train.latest_checkpoint(out_dir)
  if written:
    return written
  checkpoint = checkpoints.resolve(dense_checkpoint)
  shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
  if "shared/embedding" not in shapes:
    raise ValueError("%s has no shared/embedding: is it a mesh-tensorflow "
                     "transformer's checkpoint?" % checkpoint)
  vocab_size = shapes["shared/embedding"][0]
  model = models.make_model(vocab_size, model_type=model_type)
  copies = plan(weight_shapes(model), checkpoint)
  path = write_checkpoint(checkpoint, copies, out_dir)
  tf.logging.info("upcycled %s into %s (%d weights)", checkpoint, path,
                  len(copies))
  return path
