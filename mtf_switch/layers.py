"""The Switch feed-forward layer: a drop-in for mtf's DenseReluDense.

Wires a router (`mtf_switch.routers`) into a mesh-tensorflow
`TransformerLayer`: splits the layer's tokens into groups, routes them,
runs the experts on `[experts, groups, capacity, d_model]` buffers and
combines their outputs back into token order.  Dropped tokens get a zero
output; the layer stack's residual connection carries them on (Section 2.2).
The dispatch mode, chosen once per layer, decides how tokens reach the
experts: by one-hot einsums or by index into the capacity buffers, or
without capacity (`mtf_switch.dropless`, CPU and GPU only).

Expert weights carry the `experts` mesh dimension and their hidden layer
the `d_ff` dimension, so the layout alone decides expert and model
parallelism: `experts:batch` (T5's default) splits the experts over the
data-parallel cores, `experts:expert;d_ff:model;batch:batch` over a mesh
axis of their own with model parallelism inside each expert.  The names
`experts_unsplit` and `groups_unsplit` are internal and must stay unsplit.
"""
import weakref

import gin
import mesh_tensorflow as mtf
from mesh_tensorflow.transformer import transformer
import tensorflow.compat.v1 as tf

from mtf_switch import dispatch
from mtf_switch import dropless
from mtf_switch import experts
from mtf_switch import routers
from mtf_switch import routing

# mtf.Graph -> {metric name: mtf.Tensor}; see `routing_metrics`.
_METRICS = weakref.WeakKeyDictionary()
_ROUTES = weakref.WeakKeyDictionary()  # graph -> {scope: assignments}

# Above this many experts a layer exports only the max and min of its
# per-expert token fractions to TensorBoard.
_MAX_PER_EXPERT_SUMMARIES = 64

# GEGLU: a GELU branch times a linear branch (the paper's T5 models).
ACTIVATIONS = {"relu": "relu", "geglu": ["gelu", "linear"]}


def routes(graph):
  """The routing that Switch layers recorded on an mtf graph, by index.

  Returns:
    dict from layer scope to its list of routing.Assignment (one per
    choice, after the capacity cut: [groups, group_size] each, the groups'
    tokens in the layer input's order), in layer order.
  """
  return dict(_ROUTES.get(graph, {}))


def routing_metrics(graph):
  """The routing metrics that Switch layers recorded on an mtf graph.

  Args:
    graph: mtf.Graph.

  Returns:
    dict from "<layer scope>/<metric>" to float32 mtf.Tensor scalars (and
    "<layer scope>/expert_fraction", [experts]), in layer order.
  """
  return dict(_METRICS.get(graph, {}))


def _mesh_axis(context, dim):
  """(Name of the mesh axis that `dim` is split on, its size), or (None,
  1) if the model's layout does not split it."""
  model = context.model
  if getattr(model, "layout", None) is None or model.mesh_shape is None:
    return None, 1
  mesh_shape = mtf.convert_to_shape(model.mesh_shape)
  rules = mtf.convert_to_layout_rules(model.layout)
  axis = rules.tensor_dimension_to_mesh_axis(dim, mesh_shape)
  if axis is None:
    return None, 1
  return mesh_shape.dims[axis].name, mesh_shape.dims[axis].size


def _expert_groups_dim(context, groups_dim, experts_dim):
  """The groups dimension of the experts' buffers.

  Where the layout splits the experts on the groups' own mesh axis
  (`experts:batch`, T5's default), the buffers' split moves from the groups
  to the experts: the all-to-all of Section 2.2 / Figure 9, after which
  each core holds every group for its experts (`groups_unsplit`).
  Otherwise the groups stay split as they are: unsplit, they would be
  computed whole on every core of their axis (e.g. by each data-parallel
  core, with the experts on an axis of their own or on none).  A model
  built without its layout gets `groups_unsplit`, which lowers under any.
  """
  unsplit = mtf.Dimension("groups_unsplit", groups_dim.size)
  if getattr(context.model, "layout", None) is None:
    return unsplit
  axis, _ = _mesh_axis(context, groups_dim)
  if axis is not None and axis == _mesh_axis(context, experts_dim)[0]:
    return unsplit
  return groups_dim


def _mesh_axis_size(context, dim):
  """Size of the mesh axis that `dim` is split on (1 if not split)."""
  return _mesh_axis(context, dim)[1]


def choose_group_size(num_tokens, group_size, batch_shards):
  """The group size the layer uses: `group_size` or the closest below it.

  Groups must not straddle batch shards, so the group size must divide the
  tokens of one shard; T5's C4 lengths (512 inputs, 114 targets) rarely give
  a multiple of a power of two.  Like mesh-tensorflow's MoE layers, take the
  largest divisor of the tokens per shard that is at most `group_size`.

  Args:
    num_tokens: int, tokens of the layer (batch x length).
    group_size: int, the requested group size.
    batch_shards: int, cores the batch is split over.

  Returns:
    int.

  Raises:
    ValueError: if the tokens do not split evenly over the batch shards.
  """
  if num_tokens % batch_shards:
    raise ValueError(
        "%d tokens cannot be split over the %d shards of the batch; use a "
        "batch size divisible by %d" % (num_tokens, batch_shards,
                                        batch_shards))
  tokens_per_shard = num_tokens // batch_shards
  return max(d for d in range(1, min(group_size, tokens_per_shard) + 1)
             if tokens_per_shard % d == 0)


class _EinsumDispatch:
  """Tokens to `[experts, groups, capacity, d_model]` buffers and back by
  one-hot einsums (Section 2.2, as mesh-tensorflow's MoE): static shapes,
  the TPU default."""
  one_hot_tensors = True  # the router builds dispatch and combine
  dropless = False  # the router is given a capacity

  def check_router(self, router):
    """Raises ValueError if the mode cannot use this router."""
    del router

  def __call__(self, layer, context, grouped, instructions, experts_dim,
               capacity):
    """The layer's output before the residual.

    Args:
      layer: the SwitchFeedForward (its expert hyperparameters).
      context: transformer.Context.
      grouped: [groups, group_size, d_model].
      instructions: routing.RoutingInstructions over `experts_unsplit`.
      experts_dim: mtf.Dimension `experts` of the expert weights.
      capacity: int, slots per expert and group.

    Returns:
      [groups, group_size, d_model].
    """
    groups_dim, group_size_dim, model_dim = grouped.shape.dims
    routed_experts_dim = mtf.Dimension("experts_unsplit", experts_dim.size)
    capacity_dim = mtf.Dimension("capacity", capacity)
    # [experts_unsplit, groups, capacity, d_model]
    expert_inputs = self.dispatch(grouped, instructions, routed_experts_dim,
                                  capacity_dim)
    # [experts, groups, capacity, d_model]
    expert_inputs = mtf.reshape(
        expert_inputs, [experts_dim, _expert_groups_dim(context, groups_dim,
                                                        experts_dim),
                        capacity_dim, model_dim])
    expert_outputs = self.expert_ffn(layer, context, expert_inputs,
                                     experts_dim)
    # ... and back: [experts_unsplit, groups, capacity, d_model]
    expert_outputs = mtf.reshape(
        expert_outputs, [routed_experts_dim, groups_dim, capacity_dim,
                         model_dim])
    # [groups, group_size, d_model]
    return self.combine(expert_outputs, instructions, group_size_dim)

  def expert_ffn(self, layer, context, expert_inputs, experts_dim):
    """The experts' FFNs: [experts, groups, capacity, d_model] both ways."""
    model_dim = expert_inputs.shape.dims[-1]
    hidden_dim = mtf.Dimension("d_ff", layer.hidden_size)
    # [experts, groups, capacity, d_ff]
    hidden = experts.dense_product(
        expert_inputs, hidden_dim, experts_dim, context.variable_dtype, "wi",
        ACTIVATIONS[layer.activation])
    if context.train and layer.expert_dropout_rate > 0:
      hidden = mtf.dropout(hidden, context.train,
                           keep_prob=1.0 - layer.expert_dropout_rate)
    return experts.dense(hidden, model_dim, experts_dim,
                         context.variable_dtype, "wo")

  def dispatch(self, grouped, instructions, experts_dim, capacity_dim):
    """[groups, group_size, d_model] -> [experts, groups, capacity, d_model]."""
    groups_dim, _, model_dim = grouped.shape.dims
    return mtf.einsum(
        [grouped, instructions.dispatch],
        output_shape=[experts_dim, groups_dim, capacity_dim, model_dim])

  def combine(self, expert_outputs, instructions, group_size_dim):
    """[experts, groups, capacity, d_model] -> [groups, group_size, d_model]."""
    _, groups_dim, _, model_dim = expert_outputs.shape.dims
    return mtf.einsum([expert_outputs, instructions.combine],
                      output_shape=[groups_dim, group_size_dim, model_dim])


class _IndexDispatch(_EinsumDispatch):
  """The same buffers filled and read by index (mtf_switch.dispatch:
  gather and segment sums, no multiplications by zero)."""
  one_hot_tensors = False

  def dispatch(self, grouped, instructions, experts_dim, capacity_dim):
    return dispatch.dispatch(grouped, instructions.assignments, experts_dim,
                             capacity_dim)

  def combine(self, expert_outputs, instructions, group_size_dim):
    return dispatch.combine(expert_outputs, instructions.assignments,
                            group_size_dim)


class _DroplessDispatch:
  """No capacity: each expert computes exactly the rows routed to it
  (mtf_switch.dropless; CPU and GPU, not TPU)."""
  one_hot_tensors = False
  dropless = True  # the router is given the whole group as capacity

  def check_router(self, router):
    router.check_dropless()

  def __call__(self, layer, context, grouped, instructions, experts_dim,
               capacity):
    del capacity  # the whole group: nothing was dropped
    return dropless.ffn(
        grouped, instructions.assignments, experts_dim,
        mtf.Dimension("d_ff", layer.hidden_size),
        _activation_list(layer.activation), context.variable_dtype,
        lambda dim: _mesh_axis(context, dim),
        layer.expert_dropout_rate if context.train else 0.0)


def _activation_list(activation):
  """The activations of an expert's input kernels, as a list."""
  activations = ACTIVATIONS[activation]
  return activations if isinstance(activations, list) else [activations]


# How tokens reach their experts, by the `dispatch_mode` that chooses it.
_DISPATCHERS = {
    "einsum": _EinsumDispatch(),
    "index": _IndexDispatch(),
    "dropless": _DroplessDispatch(),
}
DISPATCH_MODES = tuple(_DISPATCHERS)


@gin.configurable(module="mtf_switch")
class SwitchFeedForward(transformer.TransformerLayer):
  """Sparse feed-forward layer: top-1 Switch routing or the top-2 MoE.

  Replaces `transformer_layers.DenseReluDense` in a layer stack; works in
  encoders and decoders, in training, evaluation and incremental decoding.
  """

  def __init__(self,
               num_experts=8,
               hidden_size=2048,
               activation="relu",
               router=None,
               group_size=1024,
               capacity_factor_train=1.25,
               capacity_factor_eval=2.0,
               min_capacity=4,
               expert_dropout_rate=0.0,
               dispatch_mode="einsum",
               dropless_eval=False,
               num_shared_experts=0):
    """Creates a SwitchFeedForward.

    Args:
      num_experts: int >= 1, experts in the layer.
      hidden_size: int, d_ff of each expert.
      activation: "relu" or "geglu" (gated GELU, Shazeer 2020).
      router: a `routers.Router`; default a `routers.TokensChooseRouter()`
        (top-1 Switch routing, with whatever gin binds for it).
      group_size: int, tokens routed together; the group's tokens compete
        for the experts' capacity.  Lowered to the closest size that splits
        the tokens of each batch shard (see `choose_group_size`), e.g. in
        incremental decoding.
      capacity_factor_train: float > 0, capacity factor in training.
      capacity_factor_eval: float > 0, capacity factor otherwise.
      min_capacity: int >= 1, the smallest expert capacity.
      expert_dropout_rate: dropout rate inside the experts' hidden layer
        ("expert dropout", Section 4.1: 0.4 for fine-tuning), apart from the
        layer stack's dropout.
      dispatch_mode: how tokens reach their experts, one of
        DISPATCH_MODES: "einsum" (one-hot einsums into capacity buffers,
        the TPU default), "index" (the same buffers by gather and segment
        sums, faster on CPU), or "dropless" (no capacity, nothing dropped
        in training or evaluation: each expert computes only the rows
        routed to it, as MegaBlocks; CPU and GPU only, see
        mtf_switch.dropless for its cost over a mesh; the capacity
        factors and min_capacity are then unused, and the router must be
        a tokens-choose one).
      dropless_eval: outside training (evaluation, decoding), give every
        expert room for the whole group, so that no token is dropped
        whatever the router does (capacity_factor_eval is then unused).
        The expert buffers grow to [experts, groups, group_size, d_model]:
        cheap for the small CPU models (their gin files turn it on), costly
        with many experts and large groups, and with einsum dispatch,
        whose one-hot tensors grow as group_size^2 x experts.

    Raises:
      ValueError: on a bad value, naming it and what would be right.
    """
    if activation not in ACTIVATIONS:
      raise ValueError("activation must be one of %s, got %r"
                       % (sorted(ACTIVATIONS), activation))
    if not (isinstance(num_experts, int) and num_experts >= 1):
      raise ValueError("num_experts must be an int >= 1, got %r"
                       % (num_experts,))
    if not (isinstance(group_size, int) and group_size >= 1):
      raise ValueError("group_size must be an int >= 1, got %r"
                       % (group_size,))
    if dispatch_mode not in DISPATCH_MODES:
      raise ValueError("dispatch_mode must be one of %s, got %r"
                       % (DISPATCH_MODES, dispatch_mode))
    router = router or routers.TokensChooseRouter()
    router.check_num_experts(num_experts)
    _DISPATCHERS[dispatch_mode].check_router(router)
    routing.check_capacity_factor(capacity_factor_train,
                                  "capacity_factor_train")
    routing.check_capacity_factor(capacity_factor_eval,
                                  "capacity_factor_eval")
    routing.check_min_capacity(min_capacity)
    routing.check_rate(expert_dropout_rate, "expert_dropout_rate")
    if not (isinstance(num_shared_experts, int)
            and not isinstance(num_shared_experts, bool)
            and num_shared_experts >= 0):
      raise ValueError("num_shared_experts must be an int >= 0 (0: none), "
                       "got %r" % (num_shared_experts,))
    self.num_experts = num_experts
    self.hidden_size = hidden_size
    self.activation = activation
    self.router = router
    self.group_size = group_size
    self.capacity_factor_train = capacity_factor_train
    self.capacity_factor_eval = capacity_factor_eval
    self.min_capacity = min_capacity
    self.expert_dropout_rate = expert_dropout_rate
    self.dispatch_mode = dispatch_mode
    self.dropless_eval = dropless_eval
    self.num_shared_experts = num_shared_experts
    self._dispatcher = _DISPATCHERS[dispatch_mode]

  def call(self, context, x, losses=None):
    """Applies the layer to x: [batch..., (length,) d_model]."""
    experts_dim = mtf.Dimension("experts", self.num_experts)
    self._check_expert_split(context, experts_dim)
    self.router.check_context(context)
    grouped, nonpadding = self._group_tokens(context, x)
    group_size_dim = grouped.shape.dims[1]
    # Routing sees all experts on every core (the router is small); the
    # expert weights are split along `experts` as the layout says.
    routed_experts_dim = mtf.Dimension("experts_unsplit", self.num_experts)

    capacity = self.capacity(group_size_dim.size, context.train)
    instructions = self.router(
        grouped, nonpadding, routed_experts_dim, capacity, context.train,
        context.variable_dtype, x.dtype,
        one_hot_tensors=self._dispatcher.one_hot_tensors)
    self._record(context, instructions.metrics)
    _ROUTES.setdefault(context.mesh.graph, {})[
        tf.get_variable_scope().name] = instructions.assignments
    # [groups, group_size, d_model]
    outputs = self._dispatcher(self, context, grouped, instructions,
                               experts_dim, capacity)
    outputs = mtf.reshape(outputs, x.shape)
    if self.num_shared_experts:
      outputs += self._shared_experts(context, x)
    return outputs

  def _shared_experts(self, context, x):
    """The shared experts' summed output: one FFN num_shared_experts x
    hidden_size wide is the sum of that many FFNs of hidden_size."""
    hidden_dim = mtf.Dimension("d_ff",
                               self.num_shared_experts * self.hidden_size)
    with tf.variable_scope("shared"):
      h = mtf.layers.dense_product(
          x, reduced_dims=x.shape.dims[-1:], new_dims=hidden_dim,
          activation_functions=ACTIVATIONS[self.activation], use_bias=False,
          variable_dtype=context.variable_dtype, name="wi")
      if context.train and self.expert_dropout_rate:
        h = mtf.dropout(h, context.train,
                        keep_prob=1.0 - self.expert_dropout_rate)
      return mtf.layers.dense(
          h, x.shape.dims[-1:], reduced_dims=[hidden_dim], use_bias=False,
          variable_dtype=context.variable_dtype, name="wo")

  @property
  def evaluates_dropless(self):
    """Whether evaluation and decoding drop no token."""
    return self.dropless_eval or self._dispatcher.dropless

  def capacity(self, group_size, train):
    """Slots per expert in a group of group_size tokens (Section 2.2); the
    whole group where no token may be dropped, so that every token fits."""
    if self._dispatcher.dropless or (not train and self.dropless_eval):
      return group_size
    return routing.expert_capacity(
        group_size, self.num_experts,
        self.capacity_factor_train if train else self.capacity_factor_eval,
        self.min_capacity)

  def _group_tokens(self, context, x):
    """Splits x's tokens into groups along the batch.

    Args:
      context: transformer.Context.
      x: [batch..., (length,) d_model].

    Returns:
      grouped: [groups, group_size, d_model]; `groups` keeps the name of
        x's first dimension (the batch) so that it is split like the batch.
      nonpadding: [groups, group_size] float32, or None (no padding).

    Raises:
      ValueError: if the tokens do not split evenly over the batch's mesh
        axis.
    """
    outer_dims = x.shape.dims[:-1]
    batch_dim = outer_dims[0]
    group_size = choose_group_size(mtf.Shape(outer_dims).size,
                                   self.group_size,
                                   _mesh_axis_size(context, batch_dim))
    groups_dim = mtf.Dimension(batch_dim.name,
                               mtf.Shape(outer_dims).size // group_size)
    group_size_dim = mtf.Dimension("group_size", group_size)
    grouped = mtf.reshape(x, [groups_dim, group_size_dim, x.shape.dims[-1]])
    nonpadding = context.nonpadding
    # In incremental decoding x has no length dimension and every token is
    # real; otherwise padding is where the sequence id is 0.
    if (isinstance(nonpadding, mtf.Tensor)
        and set(nonpadding.shape.dims) <= set(outer_dims)):
      nonpadding = mtf.reshape(
          mtf.broadcast(mtf.to_float(nonpadding), outer_dims),
          [groups_dim, group_size_dim])
    else:
      nonpadding = None
    return grouped, nonpadding

  def _check_expert_split(self, context, experts_dim):
    shards = _mesh_axis_size(context, experts_dim)
    if self.num_experts % shards:
      raise ValueError(
          "num_experts=%d is not divisible by the %d shards of the mesh axis "
          "that the layout splits 'experts' on; use a multiple of %d experts "
          "or another layout" % (self.num_experts, shards, shards))

  def _record(self, context, metrics):
    """Adds the losses to the context and exports the routing metrics.

    The losses are computed in float32 and cast to the activation dtype at
    the end only, because the layer stack adds them to the cross-entropy,
    which has that dtype.
    """
    if context.losses is not None:
      for name in (("aux_loss", "z_loss") if self.router.z_loss_coef
                   else ("aux_loss",)):
        context.losses.append(
            mtf.cast(metrics[name], context.activation_dtype))
    scope = tf.get_variable_scope().name
    recorded = _METRICS.setdefault(context.mesh.graph, {})
    for name, value in metrics.items():
      recorded["%s/%s" % (scope, name)] = value
    if not context.train:
      return
    # mtf prefixes summary names with the current name scope (the layer's).
    for name, value in metrics.items():
      if value.shape.ndims == 0:
        mtf.scalar_summary(name, value)
    # One summary per expert: readable up to a few dozen experts.
    fractions = metrics["expert_fraction"]
    if self.num_experts <= _MAX_PER_EXPERT_SUMMARIES:
      for i, fraction in enumerate(mtf.split(
          fractions, fractions.shape.dims[0], self.num_experts)):
        mtf.scalar_summary("expert_fraction/%03d" % i,
                           mtf.reduce_sum(fraction))
