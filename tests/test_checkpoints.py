"""Checkpoints: saved master weights restore on any mesh."""
import gin
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np

from mtf_switch import checkpoints
from mtf_switch import models
from mtf_switch import step as step_lib


def test_checkpoint_restores_the_same_weights_on_another_mesh(tmp_path):
  """Checkpoints hold master weights: a 2-device run resumes a 1-device one
  with identical evaluation."""
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  tokens = np.random.RandomState(0).randint(2, 32, (4, 8)).astype(np.int32)

  def step_graph(mesh_shape, layout, train_mode):
    model = models.make_bitransformer(32, mesh_shape, layout)
    return step_lib.build_step_graph(model, 4, 8, 8, mesh_shape, layout,
                                     train=train_mode)

  def evaluate(mesh_shape, layout, model_dir):
    step = step_graph(mesh_shape, layout, False)
    sess, _ = checkpoints.start_session(step, model_dir)
    with sess:
      return sess.run(step.token_log_likelihood,
                      {step.inputs: tokens, step.targets: tokens})

  step = step_graph("", "", True)
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    for _ in range(3):
      sess.run(step.train_op, {step.inputs: tokens, step.targets: tokens})
    checkpoints.save(sess, step, str(tmp_path))
  untrained = evaluate("", "", None)
  one_device = evaluate("", "", str(tmp_path))
  # Batch unsplit, so the groups (and the capacity) are those of one device.
  four_devices = evaluate("expert:2,model:2",
                          "experts:expert;d_ff:model;heads:model",
                          str(tmp_path))
  assert one_device > untrained
  np.testing.assert_allclose(four_devices, one_device, rtol=1e-5)
