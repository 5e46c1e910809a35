"""Mesh-TensorFlow meshes on this host (its CPU, or the devices named per
mesh position) or on a cluster's tasks (`cluster`), and lowering onto
them."""
import zlib

import gin
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch.training import cluster


class ReproducibleMeshImpl(mtf.placement_mesh_impl.PlacementMeshImpl):
  """A PlacementMeshImpl whose random ops draw the same values in every
  process.

  mesh-tensorflow seeds each random op of a lowering from Python's `random`
  module and the process-salted `hash` of a string, so two builds of one
  graph (a rerun, a resumed run) draw different noise under the same
  TensorFlow seed.  Here an op's seed is a stable checksum of its place
  among the lowering's random ops and of the slice, so the noise follows
  the graph-level seed alone (`tf.set_random_seed`); slices that must agree
  still do.
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._random_ops = 0

  def random(self, shape, tf_fn, kwargs):
    """As PlacementMeshImpl.random, with reproducible op seeds."""
    op_index = self._random_ops
    self._random_ops += 1
    slice_shape = self.slice_shape(shape)

    def draw(pnum):
      seed = zlib.crc32(
          ("%d,%s" % (op_index, self.slice_begin(shape, pnum))).encode())
      return tf_fn(slice_shape, seed=seed, **kwargs)
    return self.slicewise(draw, self.laid_out_pnum())


def cpu_mesh_impl(mesh_shape, layout, devices=None):
  """A ReproducibleMeshImpl with a device per mesh position.

  Without `devices`, all slices run on the host CPU's default device; the
  slicing and the collective operations are those of a real multi-device
  mesh, so results equal a 1-device run.

  Args:
    mesh_shape: input to mtf.convert_to_shape, e.g. "batch:2,experts:2".
    layout: input to mtf.convert_to_layout_rules, e.g. "experts:experts".
    devices: None, or a device name per mesh position
      (`parse_devices`; checked by `check_devices`).

  Returns:
    mtf.placement_mesh_impl.PlacementMeshImpl.
  """
  mesh_shape, layout_rules = parse_mesh(mesh_shape, layout)
  if devices:
    check_devices(devices, mesh_shape)
  return ReproducibleMeshImpl(mesh_shape, layout_rules,
                              list(devices or [""] * mesh_shape.size))


def parse_mesh(mesh_shape, layout=""):
  """The mtf.Shape and mtf.LayoutRules of a mesh shape and a layout.

  Checked before a graph is built: mesh-tensorflow would parse them where
  the first layer is laid out, failing there with a message that names
  neither string.  A layout rule may name a mesh axis that the mesh does
  not have (mesh-tensorflow ignores it, as T5's default layouts rely on).

  Args:
    mesh_shape: e.g. "batch:2" ("" is one device), or mtf.Shape.
    layout: e.g. "batch:batch;experts:batch", or mtf.LayoutRules.

  Returns:
    (mtf.Shape, mtf.LayoutRules).

  Raises:
    ValueError: naming the mesh shape that is not name:size pairs of
      distinct names and positive sizes, or the layout that is not
      dimension:axis pairs.
  """
  try:
    shape = mtf.convert_to_shape(mesh_shape)
  except ValueError:  # an entry without one colon, or a size not an int
    shape = None
  if (shape is None or any(d.size < 1 for d in shape.dims)
      or len(set(shape.dimension_names)) < shape.ndims):
    raise ValueError("mesh shape %r: give mesh axes as name:size pairs, "
                     "each name once and each size positive, e.g. "
                     "batch:2" % (mesh_shape,))
  try:
    layout_rules = mtf.convert_to_layout_rules(layout)
  except ValueError:
    raise ValueError("layout %r: give tensor_dimension:mesh_axis pairs, e.g. "
                     "batch:batch;experts:batch" % (layout,)) from None
  return shape, layout_rules


def lower(mtf_graph, mesh, mesh_shape="", layout="", autostack=False,
          devices=None):
  """Lowers `mtf_graph` onto a CPU mesh.

  Args:
    mtf_graph: mtf.Graph.
    mesh: the mtf.Mesh of its tensors.
    mesh_shape: mesh shape string; "" is one device.
    layout: layout rules string.
    autostack: merge variables into stacks (mesh-tensorflow's default);
      off by default, so that checkpoints keep one entry per model variable
      whatever the mesh, and values load by the variables' own names.
    devices: None (every slice on the default device), or a device name per
      mesh position, e.g. ["/device:GPU:0", "/device:GPU:1"].

  Returns:
    mtf.Lowering.
  """
  return mtf.Lowering(
      mtf_graph, {mesh: cpu_mesh_impl(mesh_shape, layout, devices)},
      autostack=autostack)


def parse_devices(text):
  """Device names from a comma-separated list ("gpu:0,gpu:1").

  Returns:
    list of canonical names ("/device:GPU:0"), or None for "".

  Raises:
    ValueError: naming the entry that is not `cpu:N` or `gpu:N`.
  """
  devices = []
  for entry in filter(None, (e.strip() for e in (text or "").split(","))):
    kind, _, index = entry.lower().rpartition("/device:")[2].partition(":")
    if kind not in ("cpu", "gpu") or not index.isdigit():
      raise ValueError("mesh device %r: give cpu:N or gpu:N, e.g. "
                       "gpu:0,gpu:1" % entry)
    devices.append("/device:%s:%d" % (kind.upper(), int(index)))
  return devices or None


def check_devices(devices, mesh_shape):
  """Checks a device list against the mesh and this machine.

  CPU devices need not exist: `session_config` makes as many virtual CPU
  devices as the graph names.

  Raises:
    ValueError: if the count is not the mesh's size, or a GPU is missing
      (naming the GPUs there are), or as `parse_mesh`.
  """
  mesh_shape, _ = parse_mesh(mesh_shape)
  if len(devices) != mesh_shape.size:
    raise ValueError(
        "%d mesh devices %s for mesh %s of %d positions: give one device "
        "per position" % (len(devices), list(devices), mesh_shape,
                          mesh_shape.size))
  gpus = ["/device:GPU:%s" % d.name.rsplit(":", 1)[1]
          for d in tf.config.list_physical_devices("GPU")]
  missing = [d for d in devices if d.startswith("/device:GPU") and
             d not in gpus]
  if missing:
    raise ValueError("mesh devices %s are not on this machine (its GPUs: "
                     "%s)" % (missing, gpus or "none"))


@gin.configurable(module="mtf_switch")
def local_devices(count=gin.REQUIRED):
  """`count` local GPUs for T5's `utils.run.mesh_devices`, checked now.

  T5 runs off TPU with soft placement, so a device that does not exist
  (a fourth GPU on a machine with two) would silently share another;
  here it is an error before training starts (the gin/layouts/gpu_*.gin
  files use it).

  Args:
    count: int, the number of GPUs (the mesh's size).

  Returns:
    list of device names, ["/device:GPU:0", ...].

  Raises:
    ValueError: naming the missing GPUs and those there are.
  """
  devices = ["/device:GPU:%d" % i for i in range(count)]
  check_devices(devices, "devices:%d" % count)
  return devices


def session_config(graph):
  """A session config with as many CPU devices as `graph` places ops on
  (virtual CPU devices: a multi-device mesh on one host's CPU), or None
  when it names at most one; on a cluster, `cluster.session_config()`.
  Soft placement stays off: an op placed on a missing device fails,
  named."""
  if cluster.graph_tasks(graph):
    return cluster.session_config()
  cpus = {op.device.rsplit(":", 1)[1] for op in graph.get_operations()
          if "/device:CPU:" in op.device}
  count = max((int(i) + 1 for i in cpus), default=0)
  if count <= 1:
    return None
  return tf.ConfigProto(device_count={"CPU": count})
