"""The lowered training and evaluation step."""
import gin
import helpers  # noqa: F401  (graph mode, compat shim)
import numpy as np

from mtf_switch import checkpoints
from mtf_switch import models
from mtf_switch import reporting
from mtf_switch import step as step_lib


def test_training_step_writes_routing_summaries_for_tensorboard():
  gin.clear_config()
  gin.parse_config_file("models/switch_tiny.gin")
  step = step_lib.build_step_graph(models.make_bitransformer(32), 2, 8, 8)
  sess, _ = checkpoints.start_session(step, None)
  with sess:
    tokens = np.full((2, 8), 5, np.int32)
    scalars = sess.run(step.scalars, {step.inputs: tokens,
                                      step.targets: tokens})
  tags = {v.tag: v.simple_value for v in reporting.scalar_summary(scalars).value}
  for layer in ("encoder/block_000/layer_003", "decoder/block_000/layer_005"):
    prefix = layer + "/SwitchFeedForward/"
    for metric in ("dropped_fraction", "aux_loss", "router_confidence",
                   "router_entropy", "expert_fraction_max",
                   "expert_fraction/000", "expert_fraction/003"):
      assert prefix + metric in tags, (prefix + metric, sorted(tags))
    np.testing.assert_allclose(
        sum(tags[prefix + "expert_fraction/%03d" % i] for i in range(4)), 1.0,
        rtol=1e-5)
