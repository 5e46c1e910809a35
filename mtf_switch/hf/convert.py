"""Weights between mtf_switch bitransformers and HuggingFace's
`SwitchTransformersForConditionalGeneration`.

`describe(model)` reads the settings a HuggingFace config needs from a
gin-built mtf_switch model and refuses, naming the setting, what
HuggingFace's checkpoints cannot hold: top-2 or other routers, expert
widths unlike the dense FFN's, sparse blocks off its pattern, per-layer
relative attention biases, FFNs other than ReLU or gated GELU.  `to_hf`
and `from_hf` rename and transpose the weights; `gin_config` writes the
gin file that rebuilds an imported model.  `export_hf` and `import_hf` are
the commands.

Gated-GELU FFNs (switch-xxl-128's: wi_0, wi_1 and wo, as T5.1.1's) are in
HuggingFace's checkpoints but not in its class, whose FFNs are ReLU (wi,
wo) only: such checkpoints import (`import_hf`), and an export of a gated
model is refused, since `from_pretrained` would drop the gate.  GELU is
the tanh approximation in both (mesh-tensorflow's `gelu`, HuggingFace's
"gelu_new").

Layout differences, all transposes: mesh-tensorflow stores a dense kernel
as [in, out] and torch's nn.Linear as [out, in]; experts are one
[experts, in, out] variable here and one nn.Linear per expert there; the
relative attention bias is [heads, buckets] here and [buckets, heads] there.

Capacity differs in kind: HuggingFace's router keeps, per sequence, the
first `expert_capacity` tokens (in position order) that choose each expert
and routes padding like any token; mtf_switch keeps the first `capacity`
real tokens of each group of `group_size` tokens, capacity = ceil(
group_size x capacity_factor / experts), padding excluded.  With groups of
one sequence and padding at the end (as T5 pads), both keep the same real
tokens; the exported `expert_capacity` is the evaluation capacity of one
sequence of `sequence_length` tokens.
"""
import collections
import json
import os

from mesh_tensorflow.transformer import transformer
from mesh_tensorflow.transformer import transformer_layers
import gin
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import layers
from mtf_switch import models
from mtf_switch import routers
from mtf_switch import routing
from mtf_switch.training import checkpoints
from mtf_switch.training import step as step_lib

Description = collections.namedtuple("Description", [
    "vocab_size", "d_model", "num_heads", "d_kv", "d_ff", "num_experts",
    "encoder", "decoder", "router", "capacity_factor_eval", "min_capacity",
    "dropout_rate", "tie_word_embeddings", "activation"])
Description.__doc__ = """What a HuggingFace config needs of a model.

Attributes:
  encoder, decoder: lists of block kinds, "dense" or "sparse", one per
    HuggingFace block (attention, [cross-attention,] FFN).
  router: RouterSettings of the Switch layers (None without any).
  capacity_factor_eval: None with dropless evaluation.
  tie_word_embeddings: whether the decoder's output layer is the shared
    embedding (scaled by d_model ** -0.5, both here and there) or a weight
    of its own (switch-c-2048's; unscaled in both).
  activation: of every FFN, dense and expert: "relu" or "geglu".
  (the others: as HuggingFace's config names them.)
"""

_ENCODER_BLOCK = ("SelfAttention", "FFN")
_DECODER_BLOCK = ("SelfAttention", "EncDecAttention", "FFN")


def describe(model, dropout_rate=0.1):
  """The HuggingFace-relevant settings of an mtf_switch bitransformer.

  Args:
    model: a transformer.Bitransformer (e.g. models.make_bitransformer()).
    dropout_rate: recorded in the config (for fine-tuning there).

  Returns:
    Description.

  Raises:
    ValueError: naming the setting HuggingFace's class cannot express.
  """
  if not isinstance(model, transformer.Bitransformer):
    raise ValueError("HuggingFace's SwitchTransformersForConditionalGeneration "
                     "is an encoder-decoder; got a %s" % type(model).__name__)
  found = collections.defaultdict(set)
  blocks = {}
  for name, stack, pattern in (
      ("encoder", model.encoder, _ENCODER_BLOCK),
      ("decoder", model.decoder, _DECODER_BLOCK)):
    blocks[name] = _blocks(name, stack.layer_stack.layers, pattern, found)
  for setting, values in sorted(found.items()):
    if len(values) > 1:
      raise ValueError("HuggingFace's config has one %s for every layer; "
                       "this model has %s" % (setting, sorted(values)))
  (d_ff,) = found["d_ff"]
  num_experts = next(iter(found["num_experts"]), 1)
  return Description(
      vocab_size=model.encoder.input_vocab_dim.size,
      d_model=model.encoder.model_dim.size,
      num_heads=next(iter(found["num_heads"])),
      d_kv=next(iter(found["d_kv"])), d_ff=d_ff, num_experts=num_experts,
      encoder=blocks["encoder"], decoder=blocks["decoder"],
      router=next(iter(found["router"]), None),
      capacity_factor_eval=next(iter(found["capacity_factor_eval"]), 2.0),
      min_capacity=next(iter(found["min_capacity"]), 1),
      dropout_rate=dropout_rate,
      tie_word_embeddings=model.decoder.shared_embedding_and_softmax_weights,
      activation=next(iter(found["activation"])))


def _blocks(stack_name, stack_layers, pattern, found):
  """Block kinds of one stack; records the layers' settings in `found`."""
  kinds = [_kind(layer) for layer in stack_layers]
  if len(kinds) % len(pattern) or any(
      k != pattern[i % len(pattern)] for i, k in enumerate(kinds)):
    raise ValueError(
        "HuggingFace's %s blocks are %s; this model's %s layers are %s"
        % (stack_name, " + ".join(pattern), stack_name, kinds))
  blocks = []
  for i, layer in enumerate(stack_layers):
    if isinstance(layer, transformer_layers.SelfAttention):
      found["num_heads"].add(layer.num_heads)
      found["d_kv"].add(layer.key_value_size)
      if (kinds[i] == "SelfAttention"
          and layer.relative_attention_type != "bias_shared"):
        raise ValueError(
            "HuggingFace shares one relative attention bias per stack: set "
            "transformer_layers.SelfAttention.relative_attention_type = "
            "'bias_shared' (this model: %r)" % layer.relative_attention_type)
      if layer.relative_attention_num_buckets != 32:
        raise ValueError(
            "HuggingFace's SwitchTransformers use 32 relative attention "
            "buckets; this model's %s use %d" % (
                stack_name, layer.relative_attention_num_buckets))
    elif isinstance(layer, layers.SwitchFeedForward):
      _check_switch(layer)
      found["d_ff"].add(layer.hidden_size)
      found["num_experts"].add(layer.num_experts)
      found["router"].add(_router_settings(layer.router))
      # None: dropless evaluation (every token of a sequence fits).
      found["capacity_factor_eval"].add(
          None if layer.evaluates_dropless else layer.capacity_factor_eval)
      found["min_capacity"].add(layer.min_capacity)
      found["activation"].add(layer.activation)
      blocks.append("sparse")
    else:
      found["activation"].add(_dense_activation(layer.activation))
      found["d_ff"].add(layer.hidden_size)
      blocks.append("dense")
  return blocks


def _kind(layer):
  if isinstance(layer, transformer_layers.EncDecAttention):
    return "EncDecAttention"
  if isinstance(layer, transformer_layers.SelfAttention):
    return "SelfAttention"
  if isinstance(layer, (layers.SwitchFeedForward,
                        transformer_layers.DenseReluDense)):
    return "FFN"
  return type(layer).__name__


def _dense_activation(activation):
  """"relu" or "geglu" of a DenseReluDense's activation (refuses others)."""
  for name, mtf_activation in layers.ACTIVATIONS.items():
    if activation == mtf_activation:
      return name
  raise ValueError(
      "HuggingFace's FFNs are ReLU or gated GELU; this model's "
      "transformer_layers.DenseReluDense.activation is %r (set 'relu' or "
      "['gelu', 'linear'])" % (activation,))


def _check_switch(layer):
  if layer.num_shared_experts:
    raise ValueError(
        "HuggingFace's SwitchTransformers has no shared experts; this "
        "model's Switch layers have %d (mtf_switch.SwitchFeedForward."
        "num_shared_experts)" % layer.num_shared_experts)
  router = layer.router
  if type(router) is not routers.TokensChooseRouter:  # pylint: disable=unidiomatic-typecheck
    raise ValueError("HuggingFace routes with top-1 tokens-choose routing; "
                     "this model's router is a %s" % type(router).__name__)
  if router.num_selected_experts != 1:
    raise ValueError(
        "HuggingFace's router is top-1; this model's sends each token to %d "
        "experts (mtf_switch.TokensChooseRouter.num_selected_experts)"
        % router.num_selected_experts)
  if router.policy not in ("input_jitter", "argmax"):
    raise ValueError(
        "HuggingFace's router explores by input jitter (or not at all); this "
        "model's mtf_switch.TokensChooseRouter.policy is %r" % router.policy)


RouterSettings = collections.namedtuple(
    "RouterSettings", ["policy", "jitter_eps", "aux_loss_coef", "z_loss_coef"])


def _router_settings(router):
  return RouterSettings(router.policy, router.jitter_eps,
                        router.aux_loss_coef, router.z_loss_coef)


def sparse_step(blocks, stack_name):
  """HuggingFace's `<stack>_sparse_step` for a list of block kinds.

  HuggingFace makes block i sparse when i % step == 1 (or every block when
  step is 1), step = num_layers // num_sparse_layers.

  Raises:
    ValueError: if the blocks do not follow that pattern.
  """
  num_sparse = blocks.count("sparse")
  if not num_sparse:
    return 0
  step = len(blocks) // num_sparse
  expected = ["sparse" if (step == 1 or i % step == 1) else "dense"
              for i in range(len(blocks))]
  if blocks != expected:
    raise ValueError(
        "HuggingFace makes block i sparse when i %% %d == 1 (%d of %d "
        "blocks sparse); this model's %s blocks are %s"
        % (step, num_sparse, len(blocks), stack_name, blocks))
  return step


def hf_config(description, sequence_length=512):
  """HuggingFace's SwitchTransformersConfig arguments (a dict).

  Raises:
    ValueError: for gated FFNs, which HuggingFace's class cannot compute;
      or sparse blocks off its pattern.
  """
  if description.activation != "relu":
    raise ValueError(
        "HuggingFace's SwitchTransformers computes ReLU FFNs only (one wi, "
        "one wo); this model's are %r (gated, as switch-xxl-128's, which "
        "imports but does not load there): set expert_activation = 'relu' "
        "and transformer_layers.DenseReluDense.activation = 'relu'"
        % description.activation)
  router = description.router or _router_settings(
      routers.TokensChooseRouter())
  if description.capacity_factor_eval is None:  # dropless evaluation
    capacity = sequence_length
  else:
    capacity = routing.expert_capacity(
        sequence_length, description.num_experts,
        description.capacity_factor_eval, description.min_capacity)
  sparse_step(description.encoder, "encoder")  # refuses other patterns
  sparse_step(description.decoder, "decoder")
  return dict(
      vocab_size=description.vocab_size, d_model=description.d_model,
      d_kv=description.d_kv, d_ff=description.d_ff,
      num_heads=description.num_heads,
      num_layers=len(description.encoder),
      num_decoder_layers=len(description.decoder),
      num_sparse_encoder_layers=description.encoder.count("sparse"),
      num_sparse_decoder_layers=description.decoder.count("sparse"),
      num_experts=description.num_experts, expert_capacity=capacity,
      router_bias=False,
      router_jitter_noise=(router.jitter_eps
                           if router.policy == "input_jitter" else 0.0),
      router_dtype="float32",
      router_aux_loss_coef=router.aux_loss_coef,
      router_z_loss_coef=router.z_loss_coef,
      relative_attention_num_buckets=32, relative_attention_max_distance=128,
      dropout_rate=description.dropout_rate, layer_norm_epsilon=1e-6,
      dense_act_fn="relu",
      tie_word_embeddings=description.tie_word_embeddings,
      is_encoder_decoder=True, pad_token_id=0, eos_token_id=1,
      decoder_start_token_id=0,
      architectures=["SwitchTransformersForConditionalGeneration"])


def _layer_scopes(names, stack):
  """The stack's layer scopes ("encoder/block_000/layer_003") in order."""
  scopes = sorted({"/".join(n.split("/")[:3]) for n in names
                   if n.startswith(stack + "/block_")})
  return scopes


def _sublayer(scope, names):
  """The layer's own sub-scope (SelfAttention, SwitchFeedForward, ...)."""
  subs = {n[len(scope) + 1:].split("/")[0] for n in names
          if n.startswith(scope + "/")} - {"rms_norm"}
  (sub,) = subs
  return sub


# An FFN's kernels, named alike in both frameworks.
_FFN_WEIGHTS = {"relu": ("wi", "wo"), "geglu": ("wi_0", "wi_1", "wo")}


def name_map(description, mtf_names):
  """(mtf name, HuggingFace name, kind) of every weight.

  kind: "copy", "transpose" (a dense kernel or the relative bias),
  ("expert", i) or "same" (another copy of a weight an earlier row maps).
  """
  rows = [("shared/embedding", "shared.weight", "copy")]
  if not description.tie_word_embeddings:
    # With tie_word_embeddings False, transformers (5.x) unties the
    # encoder's and decoder's input embeddings from `shared` too.
    rows += [("decoder/logits/kernel", "lm_head.weight", "transpose"),
             ("shared/embedding", "encoder.embed_tokens.weight", "same"),
             ("shared/embedding", "decoder.embed_tokens.weight", "same")]
  for stack, blocks, width in (("encoder", description.encoder, 2),
                               ("decoder", description.decoder, 3)):
    scopes = _layer_scopes(mtf_names, stack)
    if len(scopes) != width * len(blocks):
      raise ValueError("the checkpoint's %s has %d layers; the model's has "
                       "%d" % (stack, len(scopes), width * len(blocks)))
    for i, scope in enumerate(scopes):
      block, sub = divmod(i, width)
      hf = "%s.block.%d.layer.%d" % (stack, block, sub)
      rows.append((scope + "/rms_norm/scale", hf + ".layer_norm.weight",
                   "copy"))
      kind = _sublayer(scope, mtf_names)
      if kind in ("SelfAttention", "EncDecAttention"):
        for w in "qkvo":
          rows.append(("%s/%s/%s" % (scope, kind, w),
                       "%s.%s.%s.weight" % (hf, kind, w), "transpose"))
        if kind == "SelfAttention" and block == 0:
          rows.append(("%s/SelfAttention/relative_attention_bias" % scope,
                       hf + ".SelfAttention.relative_attention_bias.weight",
                       "transpose"))
      elif kind == "DenseReluDense":
        for w in _FFN_WEIGHTS[description.activation]:
          rows.append(("%s/DenseReluDense/%s/kernel" % (scope, w),
                       "%s.mlp.%s.weight" % (hf, w), "transpose"))
      else:  # SwitchFeedForward
        rows.append((scope + "/SwitchFeedForward/router/kernel",
                     hf + ".mlp.router.classifier.weight", "transpose"))
        for e in range(description.num_experts):
          for w in _FFN_WEIGHTS[description.activation]:
            rows.append(("%s/SwitchFeedForward/%s/kernel" % (scope, w),
                         "%s.mlp.experts.expert_%d.%s.weight" % (hf, e, w),
                         ("expert", e)))
    rows.append((stack + "/rms_norm/scale",
                 stack + ".final_layer_norm.weight", "copy"))
  return rows


def to_hf(description, weights):
  """HuggingFace state dict (name -> float32 array) of mtf weights."""
  state = {}
  for mtf_name, hf_name, kind in name_map(description, list(weights)):
    value = np.asarray(weights[mtf_name], np.float32)
    if kind == "transpose":
      value = value.T
    elif kind not in ("copy", "same"):
      value = value[kind[1]].T
    state[hf_name] = np.ascontiguousarray(value)
  return state


def from_hf(description, state, mtf_shapes):
  """mtf weights (name -> float32 array) of a HuggingFace state dict.

  Args:
    description: the Description of the mtf model to fill.
    state: HuggingFace name -> array.
    mtf_shapes: mtf name -> shape, of every weight of the model.

  Raises:
    ValueError: naming a missing HuggingFace weight, one whose shape does
      not fit, or input embeddings that differ (mtf_switch shares one).
  """
  experts = collections.defaultdict(dict)
  weights = {}
  for mtf_name, hf_name, kind in name_map(description, list(mtf_shapes)):
    if kind == "same":  # absent in checkpoints of transformers 4.x
      if hf_name in state and not np.array_equal(state[hf_name],
                                                 weights[mtf_name]):
        raise ValueError(
            "the HuggingFace checkpoint's %s differs from its shared.weight; "
            "mtf_switch's encoder and decoder share one input embedding"
            % hf_name)
      continue
    if hf_name not in state:
      raise ValueError("the HuggingFace checkpoint has no %s" % hf_name)
    value = np.asarray(state[hf_name], np.float32)
    if kind == "copy":
      weights[mtf_name] = value
    elif kind == "transpose":
      weights[mtf_name] = value.T
    else:
      experts[mtf_name][kind[1]] = value.T
  for mtf_name, by_expert in experts.items():
    weights[mtf_name] = np.stack([by_expert[e] for e in sorted(by_expert)])
  for mtf_name, value in weights.items():
    if list(value.shape) != list(mtf_shapes[mtf_name]):
      raise ValueError("%s: the HuggingFace weights give shape %s, the model "
                       "needs %s" % (mtf_name, list(value.shape),
                                     list(mtf_shapes[mtf_name])))
  return weights


def gin_config(config, source):
  """A gin file (str) that builds the model of a HuggingFace config.

  Sparse every other block or every block: the zoo's layer stacks
  (`models/stacks/`); any other pattern: the layers listed one by one.

  Args:
    config: dict, the HuggingFace config.
    source: where it came from (for the header comment).
  """
  lines = [
      "# -*-Python-*-",
      "# Written by mtf_switch.hf.import_hf from %s." % source,
      "import mesh_tensorflow.transformer.transformer",
      "import mesh_tensorflow.transformer.transformer_layers",
      "import mtf_switch",
      "",
      "include 'models/defaults.gin'",
      "include 'models/switch_defaults.gin'",
  ] + _stack_lines(config) + [
      "",
      "d_model = %d" % config["d_model"],
      "d_ff = %d" % config["d_ff"],
      "num_heads = %d" % config["num_heads"],
      "d_kv = %d" % config["d_kv"],
      "num_experts = %d" % config["num_experts"],
      "expert_activation = %r" % _activation(config),
      "transformer.Unitransformer.shared_embedding_and_softmax_weights = %r"
      % bool(config.get("tie_word_embeddings", True)),
      "dropout_rate = %r" % float(config.get("dropout_rate", 0.1)),
      "mtf_switch.TokensChooseRouter.aux_loss_coef = %r"
      % float(config.get("router_aux_loss_coef", 0.01)),
      "mtf_switch.TokensChooseRouter.z_loss_coef = %r"
      % float(config.get("router_z_loss_coef", 0.0)),
  ]
  if _activation(config) == "geglu":
    lines.append("transformer_layers.DenseReluDense.activation = "
                 "['gelu', 'linear']")
  jitter = float(config.get("router_jitter_noise", 0.0))
  if jitter:
    lines += ["mtf_switch.TokensChooseRouter.policy = 'input_jitter'",
              "mtf_switch.TokensChooseRouter.jitter_eps = %r" % jitter]
  else:
    lines.append("mtf_switch.TokensChooseRouter.policy = 'argmax'")
  return "\n".join(lines) + "\n"


def _stack_lines(config):
  """gin lines of the encoder's and decoder's layer stacks."""
  num_layers = {"encoder": config["num_layers"],
                "decoder": config.get("num_decoder_layers")
                           or config["num_layers"]}
  kinds = {stack: hf_block_kinds(config, stack, n)
           for stack, n in num_layers.items()}
  steps = {sparse_step(kinds[stack], stack) for stack in kinds}
  if len(set(num_layers.values())) == 1 and len(steps) == 1:
    n, step = num_layers["encoder"], steps.pop()
    if step == 2 and n % 2 == 0:
      return ["include 'models/stacks/switch_every_other.gin'",
              "num_layer_pairs = %d" % (n // 2)]
    if step == 1:
      return ["include 'models/stacks/switch_every_layer.gin'",
              "num_layers = %d" % n]
  lines = ["transformer.make_layer_stack.num_layers = 1"]
  for stack, attention in (("encoder", ["SelfAttention"]),
                           ("decoder", ["SelfAttention", "EncDecAttention"])):
    layer_list = []
    for kind in kinds[stack]:
      layer_list += ["@transformer_layers.%s" % a for a in attention]
      layer_list.append("@mtf_switch.SwitchFeedForward" if kind == "sparse"
                        else "@transformer_layers.DenseReluDense")
    lines.append("%s/transformer.make_layer_stack.layers = [\n    %s,\n]"
                 % (stack, ",\n    ".join(layer_list)))
  return lines


def hf_block_kinds(config, stack, num_layers):
  """"dense"/"sparse" per block, as HuggingFace's SwitchTransformersStack
  decides them."""
  num_sparse = config["num_sparse_%s_layers" % stack]
  step = num_layers // num_sparse if num_sparse else 0
  return ["sparse" if step and (step == 1 or i % step == 1) else "dense"
          for i in range(num_layers)]



CONFIG_FILE = "config.json"
MODEL_TYPE = "switch_transformers"


def read_hf_dir(hf_dir):
  """(config dict, state dict of float32 arrays) of a HuggingFace model dir.

  Reads model.safetensors, sharded safetensors (model.safetensors.index.json)
  or pytorch_model.bin (also sharded), as HuggingFace saves them.

  Raises:
    ValueError: naming the directory or file, if it is not a
      SwitchTransformers checkpoint or a file is missing.
  """
  config_path = os.path.join(hf_dir, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ValueError("%s has no %s: not a HuggingFace model dir"
                     % (hf_dir, CONFIG_FILE))
  with open(config_path) as f:
    config = json.load(f)
  if config.get("model_type") != MODEL_TYPE:
    raise ValueError("%s is a %r model, not %r (SwitchTransformers)"
                     % (config_path, config.get("model_type"), MODEL_TYPE))
  return config, _read_weights(hf_dir)


def check_importable(config, state, hf_dir):
  """Refuses, by setting, HuggingFace checkpoints mtf_switch cannot rebuild.

  Args:
    config: the config dict.
    state: the weights (name -> array).
    hf_dir: named in the errors.

  Raises:
    ValueError: naming the setting and its value.
  """
  wanted = dict(router_bias=False, relative_attention_num_buckets=32,
                relative_attention_max_distance=128, is_encoder_decoder=True)
  for key, value in wanted.items():
    if config.get(key, value) != value:
      raise ValueError(
          "%s: %s is %r; mtf_switch imports SwitchTransformers with %s = %r"
          % (hf_dir, key, config[key], key, value))
  try:
    activation = _activation(config)
  except ValueError as e:
    raise ValueError("%s: %s" % (hf_dir, e)) from None
  gated_weights = any(name.endswith(".wi_0.weight") for name in state)
  if gated_weights != (activation == "geglu"):
    raise ValueError(
        "%s: the weights' FFNs are %s, the config's %s (is_gated_act %r, "
        "feed_forward_proj %r, dense_act_fn %r)" % (
            hf_dir, "gated (wi_0, wi_1)" if gated_weights else "not gated",
            "gated" if activation == "geglu" else "not",
            config.get("is_gated_act"), config.get("feed_forward_proj"),
            config.get("dense_act_fn")))


# HuggingFace's names of the tanh approximation, mesh-tensorflow's gelu.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")


def _activation(config):
  """"relu" or "geglu": the FFNs of a HuggingFace config.

  Gated as T5's configs say it (transformers 4.x wrote `is_gated_act` and
  `feed_forward_proj`; "gated-gelu" means the tanh GELU).

  Raises:
    ValueError: naming an activation mtf_switch has not.
  """
  projection = str(config.get("feed_forward_proj") or "")
  gated = bool(config.get("is_gated_act")) or projection.startswith("gated-")
  act = config.get("dense_act_fn") or (
      "gelu_new" if projection == "gated-gelu" else "relu")
  if not gated and act == "relu":
    return "relu"
  if gated and act in _TANH_GELU:
    return "geglu"
  raise ValueError(
      "dense_act_fn is %r%s; mtf_switch imports ReLU FFNs, or gated FFNs "
      "(is_gated_act, or feed_forward_proj 'gated-gelu') with the tanh GELU "
      "(%s: mesh-tensorflow's gelu)"
      % (act, " (gated)" if gated else "", " or ".join(map(repr, _TANH_GELU))))


def _read_weights(hf_dir):
  """HuggingFace weight files of hf_dir, as name -> float32 array."""
  for single, index, load in (
      ("model.safetensors", "model.safetensors.index.json", _load_safetensors),
      ("pytorch_model.bin", "pytorch_model.bin.index.json", _load_torch)):
    if os.path.isfile(os.path.join(hf_dir, single)):
      return load(os.path.join(hf_dir, single))
    index_path = os.path.join(hf_dir, index)
    if os.path.isfile(index_path):
      with open(index_path) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
      state = {}
      for name in files:
        path = os.path.join(hf_dir, name)
        if not os.path.isfile(path):
          raise ValueError("%s lists %s, which is missing" % (index_path,
                                                             path))
        state.update(load(path))
      return state
  raise ValueError("%s has no weights (model.safetensors, pytorch_model.bin "
                   "or their sharded index)" % hf_dir)


def _load_safetensors(path):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return {k: v.astype(np.float32) for k, v in load_file(path).items()}


def _load_torch(path):
  import torch  # pylint: disable=g-import-not-at-top
  return {k: v.float().numpy()
          for k, v in torch.load(path, map_location="cpu").items()}


def _check_new_dir(out):
  """Raises ValueError if out exists and is not empty (nothing there is
  overwritten)."""
  if os.path.exists(out) and os.listdir(out):
    raise ValueError("%s exists and is not empty; give a new --out" % out)


def write_hf_dir(out, config, state):
  """Writes config.json and model.safetensors into out, atomically: a
  failure leaves no out behind.

  Raises:
    ValueError: if out exists and is not empty.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from transformers import SwitchTransformersConfig  # pylint: disable=g-import-not-at-top
  _check_new_dir(out)
  tmp = "%s.tmp-%d" % (out.rstrip("/"), os.getpid())
  os.makedirs(tmp)
  try:
    SwitchTransformersConfig(**config).save_pretrained(tmp)
    save_file(state, os.path.join(tmp, "model.safetensors"),
              metadata={"format": "pt"})
    if os.path.exists(out):
      os.rmdir(out)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
      os.rmdir(tmp)


def _weights_graph(model):
  """An evaluation step graph of the model: its weights' variables."""
  return step_lib.build_step_graph(model, 1, 8, 8, train=False)


def export(model, checkpoint, out, sequence_length=512, dropout_rate=0.1):
  """Writes a HuggingFace SwitchTransformers dir from an mtf checkpoint.

  Args:
    model: the gin-built bitransformer the checkpoint was trained as.
    checkpoint: a checkpoint path or model dir.
    out: the new directory.
    sequence_length: tokens per sequence for HuggingFace's fixed
      `expert_capacity` (the eval capacity of one such sequence).
    dropout_rate: the config's dropout rate.

  Returns:
    the HuggingFace config (dict).

  Raises:
    ValueError: naming what does not fit (see describe, hf_config,
      checkpoints.check_weights); nothing is written then.
  """
  description = describe(model, dropout_rate)
  config = hf_config(description, sequence_length)
  checkpoint = checkpoints.resolve(checkpoint)
  graph = _weights_graph(model)
  checkpoints.check_weights(checkpoint, checkpoints.same_names(graph))
  reader = tf.train.load_checkpoint(checkpoint)
  weights = {w.op.name: reader.get_tensor(w.op.name) for w in graph.weights}
  write_hf_dir(out, config, to_hf(description, weights))
  return config


MODEL_GIN = "model.gin"


def import_(hf_dir, out):
  """Writes an mtf checkpoint (out/model.ckpt-0) and the gin file that
  builds its model (out/model.gin) from a HuggingFace SwitchTransformers
  dir.

  Returns:
    the path of the gin file.

  Raises:
    ValueError: naming what is missing or does not fit; nothing is
      written to out then.
  """
  config, state = read_hf_dir(hf_dir)
  check_importable(config, state, hf_dir)
  _check_new_dir(out)
  text = gin_config(config, hf_dir)
  gin.clear_config()
  gin.parse_config(text)
  model = models.make_bitransformer(config["vocab_size"])
  description = describe(model)
  graph = _weights_graph(model)
  weights = from_hf(description, state,
                    {w.op.name: w.shape.as_list() for w in graph.weights})
  tmp = "%s.tmp-%d" % (out.rstrip("/"), os.getpid())
  sess, _ = checkpoints.start_session(graph, None)
  with sess:
    for variable in graph.weights:
      variable.load(weights[variable.op.name], sess)
    sess.run(graph.init_ops[-1])
    checkpoints.save(sess, graph, tmp)  # relative paths: tmp may move
  with open(os.path.join(tmp, MODEL_GIN), "w") as f:
    f.write(text)
  if os.path.exists(out):
    os.rmdir(out)
  os.replace(tmp, out)
  return os.path.join(out, MODEL_GIN)
