"""The model zoo: every gin model under its layout, sized by model_size."""
import gin
import helpers  # graph mode, compat shim; refusals
import pytest

from mtf_switch.planning import model_size

VOCAB = 32128

# model gin file -> (layout gin file, {variable name suffix: per-core shape})
ZOO = {
    "t5_base": ("data_32", {
        "encoder/block_000/layer_001/DenseReluDense/wi_0/kernel": [768, 2048]}),
    "t5_large": ("data_32", {}),
    "t5_xxl": ("model_data_8x64", {
        "encoder/block_000/layer_001/DenseReluDense/wi_0/kernel": [4096, 1280],
        "shared/embedding": [4016, 4096]}),
    "switch_base": ("expert_data_32", {
        "encoder/block_000/layer_003/SwitchFeedForward/wi_0/kernel":
            [4, 768, 2048],
        "encoder/block_000/layer_003/SwitchFeedForward/router/kernel":
            [768, 128]}),
    "moe_base": ("expert_data_32", {}),
    "switch_large": ("expert_data_32", {
        "decoder/block_000/layer_005/SwitchFeedForward/wo/kernel":
            [4, 2816, 1024]}),
    "switch_xxl": ("expert_model_data_8x64", {
        "encoder/block_000/layer_003/SwitchFeedForward/wi_0/kernel":
            [2, 4096, 1280]}),
    "switch_c": ("expert_data_2048", {
        "encoder/block_000/layer_001/SwitchFeedForward/wi/kernel":
            [1, 2080, 6144]}),
    "switch_tiny": ("cpu_expert_data_2", {}),
    "dense_tiny": ("cpu_data_2", {}),
}
ZOO.update(("switch_base_%d" % n, ("expert_data_32" if n >= 32 else "data_32",
                                   {})) for n in (2, 4, 8, 16, 32, 64, 256))

# Table 9 (and Figure 4 / Table 7 for the family): parameters, FLOPs/seq.
PAPER = {
    "t5_base": (223e6, 124e9), "t5_large": (0.7e9, 425e9),
    "t5_xxl": (11e9, 6.3e12), "switch_base": (7.4e9, 124e9),
    "switch_large": (26e9, 425e9), "switch_xxl": (395e9, 6.3e12),
    "switch_c": (1571e9, 890e9), "switch_base_16": (1.1e9, 124e9),
    "switch_base_32": (2.0e9, 124e9), "switch_base_64": (3.8e9, 124e9),
    "switch_base_256": (14.7e9, 124e9),
}
# The paper's T5-Large figures (0.7B, 26B) are below what its own Table 9
# shapes give (0.75B, 27.1B): see docs/zoo.md.
PARAM_TOLERANCE = {"t5_large": 0.08, "switch_large": 0.05}


def _size(model, layout):
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      ["models/%s.gin" % model, "layouts/%s.gin" % layout], [])
  return model_size.count(gin.query_parameter("utils.run.mesh_shape"),
                          gin.query_parameter("utils.run.layout_rules"),
                          vocab_size=VOCAB)


def _t5_params(d_model, d_ff, heads_x_kv, layers, ffn_matrices,
               experts=None, switch_every=None, vocab=VOCAB):
  """Parameters from the shapes alone, written out by hand."""
  attention = 4 * d_model * heads_x_kv
  ffn = ffn_matrices * d_model * d_ff
  sparse_layers, sparse = 0, 0
  if experts:
    sparse_layers = layers // switch_every
    sparse = sparse_layers * (experts * ffn + d_model * experts)  # + router
  dense_layers = layers - sparse_layers
  encoder = layers * attention + dense_layers * ffn + sparse
  decoder = 2 * layers * attention + dense_layers * ffn + sparse
  return vocab * d_model + encoder + decoder


HAND_COUNTS = {
    "t5_base": _t5_params(768, 2048, 768, 12, 3),
    "switch_base": _t5_params(768, 2048, 768, 12, 3, 128, 2),
    "switch_xxl": _t5_params(4096, 10240, 4096, 24, 3, 128, 2),
    "switch_c": _t5_params(2080, 6144, 2048, 15, 2, 2048, 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(ZOO))
def test_zoo_model_builds_under_its_layout(model):
  layout, shard_shapes = ZOO[model]
  size = _size(model, layout)
  assert size.total_params == size.expert_params + size.non_expert_params
  if model in HAND_COUNTS:
    # Plus relative attention biases (32 buckets x heads, one per stack)
    # and RMS norm scales, both small.
    assert 0 <= size.total_params - HAND_COUNTS[model] < 1e6
  if model in PAPER:
    params, flops = PAPER[model]
    tolerance = PARAM_TOLERANCE.get(model, 0.03)
    assert abs(size.total_params / params - 1) < tolerance, size.total_params
    assert abs(size.flops_per_seq / flops - 1) < 0.03, size.flops_per_seq
  for suffix, per_core in shard_shapes.items():
    (name,) = [n for n in size.shard_shapes if n.endswith(suffix)]
    assert size.shard_shapes[name][1] == per_core, name


def test_tiny_switch_model_is_flop_matched_to_the_tiny_dense_model():
  dense = _size("dense_tiny", "cpu_data_2")
  switch = _size("switch_tiny", "cpu_expert_data_2")
  assert switch.flops_per_seq == dense.flops_per_seq
  assert switch.expert_params == 2 * 4 * 2 * 64 * 128


def test_switch_flops_match_their_dense_twin_and_top2_doubles_experts():
  dense = _size("t5_base", "data_32")
  switch = _size("switch_base", "expert_data_32")
  top2 = _size("moe_base", "expert_data_32")
  assert switch.flops_per_seq == dense.flops_per_seq
  # Six encoder and six decoder FFNs run two experts instead of one.
  ffn_flops = 2 * 3 * 768 * 2048 * (6 * 512 + 6 * 114)
  assert top2.flops_per_seq - switch.flops_per_seq == ffn_flops


def test_per_core_bytes_shrink_with_expert_parallelism():
  one_core = _size("switch_tiny", "cpu_data_2")
  split = _size("switch_tiny", "cpu_expert_data_2")
  expert_bytes = 4 * one_core.expert_params
  assert split.param_bytes_per_core == (one_core.param_bytes_per_core
                                        - expert_bytes // 2)


def test_unknown_binding_names_the_gin_file_and_parameter(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("include 'models/switch_tiny.gin'\n"
                 "mtf_switch.SwitchFeedForward.num_expert = 8\n")
  gin.clear_config()
  with pytest.raises(ValueError, match=r"(?s)num_expert.*bad\.gin"):
    gin.parse_config_file(str(bad))


def test_contradictory_bindings_name_the_parameters():
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      ["models/switch_tiny.gin"],
      ["mtf_switch.SwitchFeedForward.num_experts = 1",
       "mtf_switch.TokensChooseRouter.num_selected_experts = 2"])
  with pytest.raises(ValueError,
                     match=r"num_selected_experts .* num_experts=1, got 2"):
    model_size.count()


def test_the_command_refuses_bad_values_in_one_line():
  model = ["--gin_file", "models/switch_tiny.gin"]
  assert helpers.refused(
      "mtf_switch.planning.model_size", *model, "--input_length", "-3") == (
          "argument --input_length: -3: give a positive integer (1 or more)")
  assert helpers.refused(
      "mtf_switch.planning.model_size", *model, "--gin_param",
      "mtf_switch.TokensChooseRouter.num_selected_experts = 9") == (
          "num_selected_experts must be an int >= 1 (1: Switch, 2: top-2 "
          "MoE, m x k: fine-grained experts) and at most num_experts=4, got 9")


def _tiny_size(bindings):
  gin.clear_config()
  gin.parse_config_files_and_bindings(["models/switch_tiny.gin"], bindings)
  return model_size.count(input_length=64, target_length=16)


def test_fine_grained_and_shared_experts_keep_the_flops_and_parameters():
  """DeepSeekMoE's segmentation of switch_tiny's 4 experts of d_ff 128
  (top-1): 16 experts of 32, top-4; or 1 shared and 15 routed experts of
  32, top-3.  Same FLOPs and parameters; the shared expert is dense."""
  switch = _tiny_size([])
  fine = _tiny_size(["num_experts = 16",
                     "mtf_switch.SwitchFeedForward.hidden_size = 32",
                     "mtf_switch.TokensChooseRouter.num_selected_experts = 4"])
  shared = _tiny_size(["num_experts = 15",
                       "mtf_switch.SwitchFeedForward.hidden_size = 32",
                       "mtf_switch.SwitchFeedForward.num_shared_experts = 1",
                       "mtf_switch.TokensChooseRouter.num_selected_experts = 3"])
  for size in (fine, shared):
    assert size.flops_per_seq == switch.flops_per_seq
  # Only the routers' d_model x experts differ.
  d_model, switch_layers = 64, 2
  assert fine.total_params - switch.total_params == (
      switch_layers * d_model * (16 - 4))
  assert shared.total_params - switch.total_params == (
      switch_layers * d_model * (15 - 4))
  # 2 layers x (d_model x 32 in + 32 x d_model out) of shared expert.
  assert switch.expert_params - shared.expert_params == (
      switch_layers * 2 * d_model * 32)
