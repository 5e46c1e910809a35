"""The experts' dense layers: numpy forward and gradients, mtf's variables."""
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch import experts

DIMS = dict(experts=4, groups=2, capacity=3, d_model=5, d_ff=6)


def _dims(*names):
  return [mtf.Dimension(n, DIMS[n]) for n in names]


@pytest.mark.parametrize("mesh_shape,layout", [
    ("", ""),
    ("expert:2,model:2", "experts:expert;d_ff:model"),
])
def test_matmul_and_its_gradients_match_numpy(mesh_shape, layout):
  rng = np.random.RandomState(0)
  x = rng.randn(4, 2, 3, 5).astype(np.float32)
  kernel = rng.randn(4, 5, 6).astype(np.float32)
  dy = rng.randn(4, 2, 3, 6).astype(np.float32)
  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  mtf_x = helpers.import_array(mesh, x, _dims("experts", "groups", "capacity",
                                              "d_model"))
  mtf_kernel = helpers.import_array(mesh, kernel,
                                    _dims("experts", "d_model", "d_ff"))
  mtf_dy = helpers.import_array(mesh, dy, _dims("experts", "groups",
                                                "capacity", "d_ff"))
  y = experts.matmul(mtf_x, mtf_kernel,
                     _dims("experts", "groups", "capacity", "d_ff"))
  # d(sum(y * dy)) / d inputs: the gradients for an upstream gradient dy.
  grad_x, grad_kernel = mtf.gradients([mtf.reduce_sum(y * mtf_dy)],
                                      [mtf_x, mtf_kernel])
  got = helpers.run(graph, mesh, {"y": y, "grad_x": grad_x,
                                  "grad_kernel": grad_kernel},
                    mesh_shape, layout)
  np.testing.assert_allclose(got["y"], np.einsum("egcm,emf->egcf", x, kernel),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["grad_x"],
                             np.einsum("egcf,emf->egcm", dy, kernel),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["grad_kernel"],
                             np.einsum("egcm,egcf->emf", x, dy),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activations", ["relu", ["gelu", "linear"]])
def test_dense_product_makes_the_variables_of_mtf_layers(activations):
  """Same names and shapes as mtf.layers.dense_product: checkpoints of either
  load into the other."""
  def variables(build):
    tf.reset_default_graph()
    graph = mtf.Graph()
    mesh = mtf.Mesh(graph, "mesh")
    x = mtf.random_uniform(mesh, _dims("experts", "groups", "capacity",
                                       "d_model"))
    with tf.variable_scope("layer"):
      build(x)
    return {v.name: v.shape.dims for v in graph.all_variables}

  d_ff, = _dims("d_ff")
  experts_dim, = _dims("experts")
  ours = variables(lambda x: experts.dense_product(
      x, d_ff, experts_dim, None, "wi", activations))
  theirs = variables(lambda x: mtf.layers.dense_product(
      x, reduced_dims=x.shape.dims[-1:], new_dims=[d_ff],
      activation_functions=activations, use_bias=False, name="wi",
      expert_dims=[experts_dim]))
  assert ours == theirs
  assert len(ours) == (1 if activations == "relu" else 2)
