"""mesh-tensorflow's MoE1D as the studies' control (mtf_switch.moe1d)."""
import gin
import helpers
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import moe
import numpy as np
import pytest

from mtf_switch import models
from mtf_switch import moe1d
from mtf_switch.training import checkpoints
from mtf_switch.training import loop
from mtf_switch.training import step as step_lib

SETTINGS = dict(moe_gating="switch", num_experts=4, hidden_size=helpers.D_FF,
                group_size=helpers.LENGTH, capacity_factor_eval=2.0,
                min_expert_capacity=1,
                output_dim=mtf.Dimension("d_model", helpers.D_MODEL))


def _x():
  return np.random.RandomState(0).randn(
      helpers.BATCH, helpers.LENGTH, helpers.D_MODEL)


def test_mesh_tensorflow_moe1d_fails_without_a_sequence_id_or_layout():
  # Why the control exists; if mesh-tensorflow fixes it, this fails.
  with pytest.raises(TypeError):  # layout None
    helpers.run_layer(moe.MoE1D(**SETTINGS), _x(), train_mode=False)
  ones = np.ones((helpers.BATCH, helpers.LENGTH), np.int32)
  with pytest.raises(AttributeError):  # training: nonpadding None
    helpers.run_layer(moe.MoE1D(**SETTINGS), _x(), train_mode=True,
                      layout="batch:batch", mesh_shape="batch:1")
  helpers.run_layer(moe.MoE1D(**SETTINGS), _x(), train_mode=True,
                    sequence_id=ones, layout="batch:batch",
                    mesh_shape="batch:1")


@pytest.mark.parametrize("train", [True, False])
def test_without_a_sequence_id_every_token_counts_as_real(train):
  """The control without a sequence id or layout equals MoE1D told that
  every token is real, on one device (same weights and noise: same seed
  and names)."""
  ones = np.ones((helpers.BATCH, helpers.LENGTH), np.int32)
  got, _ = helpers.run_layer(moe1d.MoE1DControl(**SETTINGS), _x(),
                             train_mode=train)
  want, _ = helpers.run_layer(moe.MoE1D(**SETTINGS), _x(), sequence_id=ones,
                              train_mode=train, layout="batch:batch",
                              mesh_shape="batch:1")
  np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got["loss_0"], want["loss_0"], rtol=1e-6)
  assert np.abs(got["y"]).max() > 0.1
  # The sequence id, when there is one, still marks padding.
  padded = ones.copy()
  padded[:, -3:] = 0
  with_padding, _ = helpers.run_layer(moe1d.MoE1DControl(**SETTINGS), _x(),
                                      sequence_id=padded, train_mode=train)
  assert not np.allclose(with_padding["y"], got["y"])


def test_the_study_control_model_trains():
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      ["models/lm_moe1d_small.gin"],
      ["d_model = 32", "d_ff = 64", "num_heads = 2", "d_kv = 16",
       "num_experts = 4", "mtf_switch.MoE1DControl.group_size = 64"])
  model = models.make_model(50)
  assert isinstance(model.layer_stack.layers[3], moe1d.MoE1DControl)
  graph = step_lib.build_step_graph(model, 4, 16, 16)
  tokens = np.random.RandomState(1).randint(1, 50, (4, 16)).astype(np.int32)
  batch = {"inputs": np.pad(tokens[:, :-1], ((0, 0), (1, 0))),
           "targets": tokens}
  sess, _ = checkpoints.start_session(graph, None)
  with sess:
    experts = [v for v in graph.weights if "MoE1DControl/w" in v.op.name]
    experts_before = sess.run(experts)
    history = loop.train(sess, graph, iter([batch] * 30), 30)
    experts_after = sess.run(experts)
  assert len(experts) == 4  # wi and wo of two MoE1D layers
  assert history[-1][1] < history[0][1] - 0.5
  for before, after in zip(experts_before, experts_after):
    for expert in range(4):  # every expert was routed to and learned
      assert not np.array_equal(before[expert], after[expert])
