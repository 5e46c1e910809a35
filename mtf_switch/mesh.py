"""Mesh-TensorFlow meshes on the host CPU, and lowering onto them."""
import mesh_tensorflow as mtf


def cpu_mesh_impl(mesh_shape, layout):
  """A PlacementMeshImpl with one (virtual) CPU device per mesh position.

  All slices run on the host CPU; the slicing and the collective operations
  are those of a real multi-device mesh, so results equal a 1-device run.

  Args:
    mesh_shape: input to mtf.convert_to_shape, e.g. "batch:2,experts:2".
    layout: input to mtf.convert_to_layout_rules, e.g. "experts:experts".

  Returns:
    mtf.placement_mesh_impl.PlacementMeshImpl.
  """
  mesh_shape = mtf.convert_to_shape(mesh_shape)
  return mtf.placement_mesh_impl.PlacementMeshImpl(
      mesh_shape, mtf.convert_to_layout_rules(layout),
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
