"""HuggingFace export and import: the same logits in both frameworks."""
import os

import gin
import helpers
import numpy as np
import pytest
import torch  # pinned (t5 imports it); HuggingFace's class is PyTorch
import transformers

from mtf_switch import models
from mtf_switch.hf import convert
from mtf_switch.training import checkpoints
from mtf_switch.training import step as step_lib


LENGTH, VOCAB = 8, 40
# d_kv * heads (32) differs from d_model (64), so that a transpose gone
# wrong cannot hide behind a square matrix; 1.0x init for logits that vary.
TINY = ["models/switch_tiny.gin"]
BINDINGS = ["d_kv = 8", "mtf_switch.ScaledInitBitransformer.init_scale = 1.0",
            "mtf_switch.SwitchFeedForward.group_size = %d" % LENGTH]
# Real tokens, then padding at the end, as T5 pads.
INPUTS = np.array([[5, 9, 13, 2, 7, 30, 1, 0], [3, 3, 8, 21, 1, 0, 0, 0]],
                  np.int32)
TARGETS = np.array([[6, 11, 4, 1, 0, 0, 0, 0], [17, 2, 9, 25, 12, 7, 1, 0]],
                   np.int32)


def _build(bindings=()):
  gin.clear_config()
  gin.parse_config_files_and_bindings(TINY, BINDINGS + list(bindings))
  return models.make_bitransformer(VOCAB)


def _random_checkpoint(model, model_dir):
  graph = step_lib.build_step_graph(model, 1, LENGTH, LENGTH, train=False)
  sess, _ = checkpoints.start_session(graph, None)
  with sess:
    checkpoints.save(sess, graph, model_dir)


def _hf_logits(hf_dir):
  return _model_logits(transformers.SwitchTransformersForConditionalGeneration
                       .from_pretrained(hf_dir).eval())


def _model_logits(model):
  """A torch model's logits for INPUTS and TARGETS (teacher forcing)."""
  decoder_inputs = np.pad(TARGETS[:, :-1], ((0, 0), (1, 0)))
  with torch.no_grad():
    out = model(input_ids=torch.tensor(INPUTS, dtype=torch.long),
                attention_mask=torch.tensor(INPUTS != 0, dtype=torch.long),
                decoder_input_ids=torch.tensor(decoder_inputs,
                                               dtype=torch.long))
  return out.logits.numpy()


def _assert_same_logits(mtf_logits, hf_logits):
  """At every real target position (HuggingFace lets the decoder's padding
  attend where mesh-tensorflow masks it; real tokens never see it)."""
  real = TARGETS != 0
  assert mtf_logits.shape == hf_logits.shape
  np.testing.assert_allclose(mtf_logits[real], hf_logits[real], atol=1e-4,
                             rtol=0)
  assert np.abs(mtf_logits[real]).max() > 1.0  # not trivially small


@pytest.mark.parametrize("capacity_factor,drops,tied", [
    (8.0, False, True), (0.5, True, True), (8.0, False, False)])
def test_export_gives_huggingface_the_same_logits(tmp_path, capacity_factor,
                                                  drops, tied):
  """Capacity 8.0 drops nothing; 0.5 (2 slots of 8 tokens per expert) drops
  tokens, and both frameworks drop the same ones.  Untied: an output layer
  of its own (switch-c-2048's)."""
  model = _build(["mtf_switch.SwitchFeedForward.capacity_factor_eval = %r"
                  % capacity_factor,
                  "mtf_switch.SwitchFeedForward.min_capacity = 1",
                  "mtf_switch.SwitchFeedForward.dropless_eval = False",
                  "transformer.Unitransformer."
                  "shared_embedding_and_softmax_weights = %r" % tied])
  _random_checkpoint(model, str(tmp_path / "mtf"))
  config = convert.export(model, str(tmp_path / "mtf"), str(tmp_path / "hf"),
                     sequence_length=LENGTH)
  assert config["expert_capacity"] == (LENGTH if not drops else 1)
  assert config["num_sparse_encoder_layers"] == 1
  assert config["tie_word_embeddings"] == tied
  assert sorted(os.listdir(tmp_path / "hf")) == ["config.json",
                                                 "model.safetensors"]
  _assert_same_logits(helpers.mtf_logits(model, str(tmp_path / "mtf"),
                                         INPUTS, TARGETS),
                      _hf_logits(str(tmp_path / "hf")))


@pytest.mark.parametrize("tied", [True, False])
def test_import_gives_mtf_the_same_logits(tmp_path, tied):
  config = transformers.SwitchTransformersConfig(
      vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_heads=2, num_layers=4,
      num_decoder_layers=4, num_sparse_encoder_layers=2,
      num_sparse_decoder_layers=2, num_experts=4, expert_capacity=LENGTH,
      initializer_factor=1.0, router_z_loss_coef=0.0,
      tie_word_embeddings=tied)
  torch.manual_seed(0)
  hf_model = transformers.SwitchTransformersForConditionalGeneration(config)
  if not tied:
    # One input embedding, as switch-c-2048's; copies, not aliases, for
    # transformers 5.x saves one alias only and then loads the others
    # freshly initialized.
    for stack in (hf_model.encoder, hf_model.decoder):
      stack.embed_tokens.weight = torch.nn.Parameter(
          hf_model.shared.weight.detach().clone())
  hf_model.save_pretrained(str(tmp_path / "hf"))
  gin_path = convert.import_(str(tmp_path / "hf"), str(tmp_path / "mtf"))
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [gin_path], ["mtf_switch.SwitchFeedForward.group_size = %d" % LENGTH,
                   "mtf_switch.SwitchFeedForward.capacity_factor_eval = 4.0"])
  model = models.make_bitransformer(128)
  _assert_same_logits(helpers.mtf_logits(model, str(tmp_path / "mtf"),
                                         INPUTS, TARGETS),
                      _hf_logits(str(tmp_path / "hf")))


def _gated(hf_model):
  """HuggingFace's model with every FFN, dense and expert, replaced by T5's
  gated one (wi_0, wi_1, wo; switch-xxl-128's), which its own class lacks."""
  t5_config = transformers.T5Config(
      d_model=hf_model.config.d_model, d_ff=hf_model.config.d_ff,
      dropout_rate=0.0, dense_act_fn="gelu_new")
  gated = transformers.models.t5.modeling_t5.T5DenseGatedActDense
  ffn_class = (transformers.models.switch_transformers
               .modeling_switch_transformers.SwitchTransformersDenseActDense)
  for module in list(hf_model.modules()):
    for name, child in list(module.named_children()):
      if isinstance(child, ffn_class):
        ffn = gated(t5_config)
        # Pre-activations of std ~3, where the tanh GELU and the exact one
        # differ by more than the tolerance: the test tells them apart.
        for linear in (ffn.wi_0, ffn.wi_1):
          torch.nn.init.normal_(linear.weight, std=3 * t5_config.d_model**-0.5)
        setattr(module, name, ffn)
  return hf_model


def test_gated_checkpoints_import_with_the_same_logits(tmp_path):
  """switch-xxl-128's kind: gated-GELU FFNs.  HuggingFace's class cannot
  compute them; T5's gated FFN put in its place is the reference."""
  config = transformers.SwitchTransformersConfig(
      vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_heads=2, num_layers=4,
      num_decoder_layers=4, num_sparse_encoder_layers=2,
      num_sparse_decoder_layers=2, num_experts=4, expert_capacity=LENGTH,
      router_z_loss_coef=0.0, dense_act_fn="gelu_new", is_gated_act=True,
      feed_forward_proj="gated-gelu")
  torch.manual_seed(0)
  hf_model = _gated(
      transformers.SwitchTransformersForConditionalGeneration(config)).eval()
  assert any(k.endswith("experts.expert_3.wi_1.weight")
             for k in hf_model.state_dict())
  hf_model.save_pretrained(str(tmp_path / "hf"))
  gin_path = convert.import_(str(tmp_path / "hf"), str(tmp_path / "mtf"))
  text = open(gin_path).read()
  assert "expert_activation = 'geglu'" in text
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      [gin_path], ["mtf_switch.SwitchFeedForward.group_size = %d" % LENGTH,
                   "mtf_switch.SwitchFeedForward.capacity_factor_eval = 4.0"])
  model = models.make_bitransformer(128)
  assert convert.describe(model).activation == "geglu"
  _assert_same_logits(helpers.mtf_logits(model, str(tmp_path / "mtf"),
                                         INPUTS, TARGETS),
                      _model_logits(hf_model))


@pytest.mark.parametrize("bindings", [
    ["mtf_switch.SwitchFeedForward.dropless_eval = True"],
    ["mtf_switch.SwitchFeedForward.dropless_eval = False",
     "mtf_switch.SwitchFeedForward.dispatch_mode = 'dropless'"]])
def test_dropless_evaluation_exports_a_capacity_of_the_whole_sequence(
    bindings):
  config = convert.hf_config(convert.describe(_build(bindings)), 512)
  assert config["expert_capacity"] == 512
  capped = convert.hf_config(convert.describe(_build(
      ["mtf_switch.SwitchFeedForward.dropless_eval = False"])), 512)
  assert capped["expert_capacity"] < 512


def test_shapes_huggingface_cannot_express_are_refused(tmp_path):
  with pytest.raises(ValueError, match="ReLU FFNs only .* 'geglu'"):
    convert.hf_config(convert.describe(_build([
        "mtf_switch.SwitchFeedForward.activation = 'geglu'",
        "transformer_layers.DenseReluDense.activation = ['gelu', 'linear']"])))
  for binding, message in [
      ("mtf_switch.SwitchFeedForward.activation = 'geglu'",
       r"one activation for every layer; this model has \['geglu', 'relu'\]"),
      ("transformer_layers.DenseReluDense.activation = ['gelu', 'relu']",
       r"DenseReluDense.activation is \['gelu', 'relu'\]"),
      ("mtf_switch.TokensChooseRouter.num_selected_experts = 2",
       "router is top-1; this model's sends each token to 2 experts"),
      ("mtf_switch.SwitchFeedForward.router = "
       "@mtf_switch.BiasBalancedRouter()",
       "this model's router is a BiasBalancedRouter"),
      ("mtf_switch.SwitchFeedForward.num_shared_experts = 1",
       "no shared experts; this model's Switch layers have 1"),
      ("mtf_switch.SwitchFeedForward.hidden_size = 96",
       r"one d_ff for every layer; this model has \[96, 128\]")]:
    with pytest.raises(ValueError, match=message):
      convert.describe(_build([binding]))
  with pytest.raises(ValueError, match="sparse when i % 2 == 1"):
    convert.sparse_step(["sparse", "dense"], "encoder")
  # A checkpoint of another shape: refused by name, nothing written.
  _random_checkpoint(_build(), str(tmp_path / "mtf"))
  wider = _build(["d_model = 96"])
  with pytest.raises(ValueError, match="does not fit this model"):
    convert.export(wider, str(tmp_path / "mtf"), str(tmp_path / "hf"), LENGTH)
  assert not os.path.exists(tmp_path / "hf")
  with pytest.raises(ValueError, match="has no config.json"):
    convert.import_(str(tmp_path / "mtf"), str(tmp_path / "imported"))
  assert not os.path.exists(tmp_path / "imported")


@pytest.mark.parametrize("shipped,hf_config", [
    ("models/released/switch_base.gin", dict(
        d_model=768, d_ff=3072, num_heads=12, num_layers=12,
        num_sparse_encoder_layers=6, num_experts=8)),
    ("models/released/switch_large_128.gin", dict(
        d_model=1024, d_ff=4096, num_heads=16, num_layers=24,
        num_sparse_encoder_layers=12, num_experts=128)),
    ("models/released/switch_xxl_128.gin", dict(
        d_model=4096, d_ff=10240, num_heads=64, num_layers=24,
        num_sparse_encoder_layers=12, num_experts=128, is_gated_act=True,
        dense_act_fn="gelu_new", tie_word_embeddings=False))])
def test_released_shapes_match_what_an_import_builds(shipped, hf_config):
  """The shipped gin files and the gin file an import writes for the
  released checkpoints' configs build the same model (the router settings
  come from each checkpoint's config)."""
  config = dict(hf_config, vocab_size=32128, d_kv=64,
                num_decoder_layers=hf_config["num_layers"],
                num_sparse_decoder_layers=hf_config[
                    "num_sparse_encoder_layers"])
  gin.clear_config()
  gin.parse_config_file(shipped)
  from_shipped = convert.describe(models.make_bitransformer(32128))
  gin.clear_config()
  gin.parse_config(convert.gin_config(config, "test"))
  from_import = convert.describe(models.make_bitransformer(32128))
  assert from_shipped._replace(router=None) == from_import._replace(
      router=None)
  if from_shipped.activation == "relu":
    assert convert.hf_config(from_shipped)["num_sparse_decoder_layers"] == (
        hf_config["num_sparse_encoder_layers"])


def test_configs_mtf_switch_cannot_rebuild_are_refused(tmp_path):
  config = transformers.SwitchTransformersConfig(
      vocab_size=128, d_model=16, d_kv=8, d_ff=16, num_heads=2, num_layers=2,
      num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
      num_experts=2, dense_act_fn="gelu")
  transformers.SwitchTransformersForConditionalGeneration(config) \
      .save_pretrained(str(tmp_path / "gelu"))
  with pytest.raises(ValueError, match="dense_act_fn is 'gelu'"):
    convert.import_(str(tmp_path / "gelu"), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  # Gated, but with the exact (erf) GELU: not mesh-tensorflow's gelu.
  config.__class__(**dict(config.to_dict(), is_gated_act=True)) \
      .save_pretrained(str(tmp_path / "gelu"))
  with pytest.raises(ValueError, match=r"dense_act_fn is 'gelu' \(gated\)"):
    convert.import_(str(tmp_path / "gelu"), str(tmp_path / "out"))
  # A gated config over ReLU weights (wi, not wi_0 and wi_1).
  config.__class__(**dict(config.to_dict(), is_gated_act=True,
                          dense_act_fn="gelu_new")) \
      .save_pretrained(str(tmp_path / "gelu"))
  with pytest.raises(ValueError, match="FFNs are not gated, the config's "
                     "gated"):
    convert.import_(str(tmp_path / "gelu"), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  # Untied input embeddings (independent copies): mtf_switch has one.
  hf_model = transformers.SwitchTransformersForConditionalGeneration(
      config.__class__(**dict(config.to_dict(), dense_act_fn="relu",
                              tie_word_embeddings=False)))
  hf_model.save_pretrained(str(tmp_path / "untied"))
  with pytest.raises(ValueError, match="encoder.embed_tokens.weight differs "
                     "from its shared.weight"):
    convert.import_(str(tmp_path / "untied"), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_the_commands_refuse_what_they_cannot_convert_in_one_line(tmp_path):
  missing = str(tmp_path / "missing")
  out = str(tmp_path / "out")
  assert helpers.refused("mtf_switch.hf.export_hf", "--model_dir", missing,
                         "--out", out) == (
      "no checkpoint at %r: give a model dir holding one or a checkpoint "
      "path such as DIR/model.ckpt-1000" % missing)
  assert helpers.refused("mtf_switch.hf.import_hf", "--hf_dir", missing,
                         "--out", out) == (
      "%s has no config.json: not a HuggingFace model dir" % missing)
  assert not os.path.exists(out)
