"""mtf_switch.training.mesh: CPU meshes, their devices, and the GPU layouts."""
import glob
import os

import gin
import helpers
import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import mtf_switch
from mtf_switch.training import mesh as mesh_lib

FOUR_CPUS = ["/device:CPU:%d" % i for i in range(4)]


@pytest.fixture(autouse=True)
def _no_devices_left_in_the_default_graph():
  """Clears the default graph after each test: a later session on it (a
  data pipeline, T5's evaluation in the same worker) places the whole
  graph, and fails on the virtual CPUs it does not have."""
  yield
  tf.reset_default_graph()


def test_device_lists_are_parsed_to_canonical_names():
  assert mesh_lib.parse_devices("gpu:0, GPU:1,/device:CPU:3") == [
      "/device:GPU:0", "/device:GPU:1", "/device:CPU:3"]
  assert mesh_lib.parse_devices("") is None
  for bad in ("tpu:0", "gpu", "gpu:x"):
    with pytest.raises(ValueError, match="mesh device %r: give cpu:N or "
                                         "gpu:N" % bad):
      mesh_lib.parse_devices(bad)


def test_mesh_shapes_and_layouts_are_parsed_or_refused_by_name():
  shape, rules = mesh_lib.parse_mesh("batch:1,experts:2",
                                     "batch:batch;experts:experts")
  assert shape == mtf.Shape([mtf.Dimension("batch", 1),
                             mtf.Dimension("experts", 2)])
  assert rules.tensor_dimension_to_mesh_axis(
      mtf.Dimension("experts", 4), shape) == 1
  assert mesh_lib.parse_mesh("")[0].size == 1
  # A rule for an axis the mesh lacks is kept, unused (T5's layouts).
  mesh_lib.parse_mesh("batch:2", "batch:batch;experts:experts")
  for bad in ("batch:x", "batch", "batch:0", "batch:-2", "batch:1,batch:2"):
    with pytest.raises(ValueError, match="mesh shape %r: give mesh axes as "
                                         "name:size pairs" % bad):
      mesh_lib.parse_mesh(bad)
  with pytest.raises(ValueError, match="layout 'experts': give "
                                       "tensor_dimension:mesh_axis pairs"):
    mesh_lib.cpu_mesh_impl("experts:2", "experts")


def test_a_device_list_must_fit_the_mesh_and_the_machine():
  with pytest.raises(ValueError, match=r"1 mesh devices \['/device:CPU:0'\] "
                                       r"for mesh .* of 2 positions"):
    mesh_lib.check_devices(["/device:CPU:0"], "batch:2")
  gpus = len(tf.config.list_physical_devices("GPU"))
  with pytest.raises(ValueError, match=r"mesh devices \['/device:GPU:%d'\] "
                                       r"are not on this machine" % gpus):
    mesh_lib.local_devices(gpus + 1)


@pytest.mark.parametrize("path", sorted(glob.glob(
    os.path.join(mtf_switch.GIN_DIR, "layouts", "gpu_*.gin"))))
def test_gpu_layouts_give_a_checked_gpu_per_mesh_position(path):
  gin.clear_config()
  gin.parse_config_file(path)
  mesh_shape = mtf.convert_to_shape(gin.query_parameter("utils.run.mesh_shape"))
  rules = mtf.convert_to_layout_rules(
      gin.query_parameter("utils.run.layout_rules"))
  assert mesh_shape.size == gin.query_parameter(
      "mtf_switch.local_devices.count")
  assert gin.query_parameter("utils.run.mesh_devices").selector == (
      "mtf_switch.local_devices")
  assert {axis for _, axis in rules._pairs} <= set(mesh_shape.dimension_names)
  expert_data = os.path.basename(path).startswith("gpu_expert_data_")
  assert (("experts", "batch") in rules._pairs) == expert_data


def test_session_config_makes_the_cpu_devices_a_graph_names():
  with tf.Graph().as_default() as graph:
    assert mesh_lib.session_config(graph) is None
    with tf.device("/device:CPU:2"):
      tf.constant(1.0)
    config = mesh_lib.session_config(graph)
  assert config.device_count["CPU"] == 3


def test_a_mesh_on_four_virtual_cpus_computes_what_one_device_does():
  tokens = helpers.random_tokens(np.random.RandomState(0), 4, 8, 16)
  layout = "batch:batch;experts:experts"
  want, variables = helpers.lm_loss_and_grads("", "", tokens)
  got, _ = helpers.lm_loss_and_grads("batch:2,experts:2", layout, tokens,
                                     variables, devices=FOUR_CPUS)
  # The lowered graph really spreads over the four devices (the session
  # has them, without soft placement: a missing one would fail).
  devices = {op.device for op in tf.get_default_graph().get_operations()}
  assert set(FOUR_CPUS) <= devices
  helpers.assert_same_loss_and_gradients(got, want, "router")
