"""Dispatch by index equals the one-hot einsum path, forward and backward."""
import helpers
import numpy as np
import numpy_reference
import pytest



@pytest.mark.parametrize("k,capacity_factor", [(1, 0.5), (2, 0.5), (2, 2.0)])
def test_index_dispatch_matches_numpy_reference(k, capacity_factor):
  rng = np.random.RandomState(3)
  x = rng.randn(helpers.BATCH, helpers.LENGTH, helpers.D_MODEL)
  sequence_id = np.ones(x.shape[:2], np.int32)
  sequence_id[2, 6:] = 0
  layer = helpers.switch_layer(num_selected_experts=k, dispatch_mode="index",
                               capacity_factor_train=capacity_factor)
  got, variables = helpers.run_layer(layer, x, sequence_id)
  capacity = max(int(np.ceil(helpers.LENGTH * capacity_factor / 4)), 1)
  want_y, _ = numpy_reference.switch_layer(
      x, k=k, capacity=capacity, group_size=helpers.LENGTH,
      nonpadding=(sequence_id > 0).astype(float),
      **helpers.weights_by_role(variables, 4))
  np.testing.assert_allclose(got["y"], want_y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mesh_shape,layout", [
    ("", ""),
    ("batch:2", "batch:batch;experts:batch"),
    ("batch:2,model:2", "batch:batch;experts:batch;d_ff:model;heads:model"),
])
@pytest.mark.parametrize("k", [1, 2])
def test_index_and_einsum_dispatch_give_equal_loss_and_gradients(
    mesh_shape, layout, k):
  tokens = helpers.random_tokens(np.random.RandomState(1), 4, 8, 16,
                                 num_padding=1)
  bindings = ["mtf_switch.TokensChooseRouter.num_selected_experts = %d" % k,
              "mtf_switch.SwitchFeedForward.capacity_factor_train = 0.75"]
  einsum, variables = helpers.lm_loss_and_grads(
      mesh_shape, layout, tokens, bindings=bindings + [
          "mtf_switch.SwitchFeedForward.dispatch_mode = 'einsum'"])
  index, _ = helpers.lm_loss_and_grads(
      mesh_shape, layout, tokens, variables, bindings=bindings + [
          "mtf_switch.SwitchFeedForward.dispatch_mode = 'index'"])
  helpers.assert_same_loss_and_gradients(index, einsum, "SwitchFeedForward")
