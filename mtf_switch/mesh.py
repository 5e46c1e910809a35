"""Mesh-TensorFlow meshes on the host CPU, and lowering onto them."""
import zlib

import mesh_tensorflow as mtf


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


def cpu_mesh_impl(mesh_shape, layout):
  """A ReproducibleMeshImpl with one (virtual) CPU device per mesh position.

  All slices run on the host CPU; the slicing and the collective operations
  are those of a real multi-device mesh, so results equal a 1-device run.

  Args:
    mesh_shape: input to mtf.convert_to_shape, e.g. "batch:2,experts:2".
    layout: input to mtf.convert_to_layout_rules, e.g. "experts:experts".

  Returns:
    mtf.placement_mesh_impl.PlacementMeshImpl.
  """
  mesh_shape = mtf.convert_to_shape(mesh_shape)
  return ReproducibleMeshImpl(mesh_shape, mtf.convert_to_layout_rules(layout),
                              [""] * mesh_shape.size)


def lower(mtf_graph, mesh, mesh_shape="", layout="", autostack=False):
  """Lowers `mtf_graph` onto a CPU mesh.

  Args:
    mtf_graph: mtf.Graph.
    mesh: the mtf.Mesh of its tensors.
    mesh_shape: mesh shape string; "" is one device.
    layout: layout rules string.
    autostack: merge variables into stacks (mesh-tensorflow's default);
      off by default, so that checkpoints keep one entry per model variable
      whatever the mesh, and values load by the variables' own names.

  Returns:
    mtf.Lowering.
  """
  return mtf.Lowering(mtf_graph, {mesh: cpu_mesh_impl(mesh_shape, layout)},
                      autostack=autostack)
