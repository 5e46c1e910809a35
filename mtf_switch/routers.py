"""Routers: who goes to which expert, as objects a Switch layer is given.

A router records its hyperparameters and, called on a group of tokens,
returns `routing.RoutingInstructions`.  The base class computes the router
logits in float32 (Sections 2.1 and 2.4; `float32_router=False` keeps them
in the activation dtype, Table 2's bfloat16 baseline); a subclass decides
the assignment and calls the shared math of `mtf_switch.routing`
(`routing.instructions`: capacity cut, dispatch/combine, load-balancing
loss, z-loss, metrics), so every router reports the same metrics and
losses.  Each router checks its own settings when it is made.

In gin, as flaxformer's MoeLayer takes its router:

  mtf_switch.SwitchFeedForward.router = @mtf_switch.TokensChooseRouter()
  mtf_switch.TokensChooseRouter.num_selected_experts = 1
  mtf_switch.TokensChooseRouter.policy = "input_jitter"

A new router is a subclass that overrides `route` (and `perturb_inputs` if
it explores), registered with `gin.configurable(module="mtf_switch")`.
"""
import gin
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch import bias_balance
from mtf_switch import routing


class Router:
  """Base class: router logits (in float32 by default), then the
  subclass's `route`."""

  # Experts that process each token (FLOPs per token, see model_size).
  num_selected_experts = 1

  def __init__(self, aux_loss_coef=1e-2, z_loss_coef=0.0,
               float32_router=True):
    """Records the loss coefficients and the router's precision.

    Args:
      aux_loss_coef: alpha of the load-balancing loss (Section 2.2: 1e-2).
      z_loss_coef: router z-loss coefficient (ST-MoE); 0 (off) for Switch.
      float32_router: compute the router's logits and softmax in float32
        whatever the activation dtype ("selective precision", Section 2.4);
        False computes them in the activation dtype, Table 2's "bfloat16"
        baseline when the activations are bfloat16.

    Raises:
      ValueError: on a negative coefficient or a float32_router that is
        not a bool.
    """
    routing.check_loss_coef(aux_loss_coef, "aux_loss_coef")
    routing.check_loss_coef(z_loss_coef, "z_loss_coef")
    if not isinstance(float32_router, bool):
      raise ValueError("float32_router must be True (selective precision) "
                       "or False (the router in the activation dtype), got "
                       "%r" % (float32_router,))
    self.aux_loss_coef = aux_loss_coef
    self.z_loss_coef = z_loss_coef
    self.float32_router = float32_router

  def check_num_experts(self, num_experts):
    """Raises ValueError if the router cannot serve `num_experts` experts."""
    del num_experts

  def check_context(self, context):
    """Raises ValueError if the router cannot serve this layer (called at
    graph-build time with the layer's transformer.Context)."""
    del context

  def check_dropless(self):
    """Raises ValueError if the router needs an expert capacity, which
    `SwitchFeedForward.dispatch_mode = "dropless"` does not have.

    A router whose tokens choose their experts serves dropless dispatch as
    it is: it is given the whole group as capacity, so every choice fits.
    """

  def __call__(self, inputs, nonpadding, experts_dim, capacity, train,
               variable_dtype, activation_dtype, one_hot_tensors=True):
    """Routes a layer's grouped tokens.

    Args:
      inputs: [groups, group_size, d_model], the layer's input in any float
        dtype.
      nonpadding: [groups, group_size] float32, or None (no padding).
      experts_dim: mtf.Dimension, the experts as the router sees them
        (unsplit).
      capacity: int, slots per expert and group.
      train: bool.
      variable_dtype: mtf.VariableDType of the model.
      activation_dtype: dtype of the dispatch and combine tensors.
      one_hot_tensors: build the dense dispatch and combine tensors.

    Returns:
      routing.RoutingInstructions.
    """
    dtype = tf.float32 if self.float32_router else activation_dtype
    # [groups, group_size, d_model]
    x = self.perturb_inputs(mtf.cast(inputs, dtype), train)
    # [groups, group_size, experts], float32 under selective precision
    logits = routing.router_logits(x, experts_dim, variable_dtype)
    return self.route(logits, capacity, nonpadding, train, activation_dtype,
                      one_hot_tensors)

  def perturb_inputs(self, x, train):
    """Exploration by perturbing the router's input; none by default."""
    del train
    return x

  def route(self, logits, capacity, nonpadding, train, activation_dtype,
            one_hot_tensors):
    """Assigns tokens to expert slots; see `__call__` for the arguments.

    Returns:
      routing.RoutingInstructions, usually from `routing.instructions`.
    """
    raise NotImplementedError


@gin.configurable(module="mtf_switch")
class TokensChooseRouter(Router):
  """Each token picks its top-k experts (Section 2.1: k = 1 is Switch).

  k = 2 is the MoE baseline of Table 1 (gates renormalized).  Exploration
  (Section 2.4, Table 11) in training only: `input_jitter` (the paper's
  default) and `input_dropout` perturb the router's input, `sample` draws
  the experts from the router's softmax, `argmax` does neither.
  """
  batch_prioritized = False  # slots by position (Section 2.2)
  passes = 1  # dropped tokens stay dropped

  def __init__(self, num_selected_experts=1, policy="input_jitter",
               jitter_eps=1e-2, dropout_rate=0.1, aux_loss_coef=1e-2,
               z_loss_coef=0.0, float32_router=True):
    """Records the router's settings.

    Args:
      num_selected_experts: 1 (Switch), 2 (top-2 MoE), or m x k for
        fine-grained experts (DeepSeekMoE: m times the experts at d_ff / m);
        the gates of k >= 2 choices are renormalized to sum to one.
      policy: one of `routing.POLICIES`.
      jitter_eps: epsilon of the input_jitter policy (Section 2.4: 1e-2).
      dropout_rate: dropout rate of the input_dropout policy.
      aux_loss_coef: see `Router`.
      z_loss_coef: see `Router`.
      float32_router: see `Router`.

    Raises:
      ValueError: on a bad value, naming it and what would be right.
    """
    super().__init__(aux_loss_coef, z_loss_coef, float32_router)
    routing.check_num_selected_experts(num_selected_experts)
    routing.check_policy(policy)
    routing.check_rate(dropout_rate, "dropout_rate")
    self.num_selected_experts = num_selected_experts
    self.policy = policy
    self.jitter_eps = jitter_eps
    self.dropout_rate = dropout_rate

  def check_num_experts(self, num_experts):
    routing.check_num_selected_experts(self.num_selected_experts, num_experts)

  def perturb_inputs(self, x, train):
    return routing.perturb_router_inputs(x, self.policy, train,
                                         self.jitter_eps, self.dropout_rate)

  def route(self, logits, capacity, nonpadding, train, activation_dtype,
            one_hot_tensors):
    return routing.route(
        logits, self.num_selected_experts, capacity, nonpadding=nonpadding,
        policy=self.policy, train=train, activation_dtype=activation_dtype,
        aux_loss_coef=self.aux_loss_coef, z_loss_coef=self.z_loss_coef,
        one_hot_tensors=one_hot_tensors,
        batch_prioritized=self.batch_prioritized, passes=self.passes)


@gin.configurable(module="mtf_switch")
class BiasBalancedRouter(TokensChooseRouter):
  """Tokens choose their top-k experts by router probability plus a
  per-expert bias; the gates are the unbiased probabilities; no auxiliary
  loss (aux_loss_coef defaults to 0).  After every training step each
  expert's bias moves by `bias_update_rate` towards balance, from the
  step's whole-batch load (Wang et al. 2024, DeepSeek-V3; see
  `mtf_switch.bias_balance`).  DeepSeek-V3 adds the bias to sigmoid
  affinities; here it is added to the softmax probabilities, the Switch
  router's affinities.

    mtf_switch.SwitchFeedForward.router = @mtf_switch.BiasBalancedRouter()
    mtf_switch.BiasBalancedRouter.bias_update_rate = 1e-3
  """

  def __init__(self, bias_update_rate=1e-3, num_selected_experts=1,
               policy="input_jitter", aux_loss_coef=0.0, **kwargs):
    """Records the router's settings.

    Args:
      bias_update_rate: float > 0, the bias's step per training step
        (1e-3 in Wang et al. 2024 and DeepSeek-V3).
      num_selected_experts: as TokensChooseRouter's.
      policy: as TokensChooseRouter's, but not "sample" (its draw from the
        unbiased softmax would ignore the bias).
      aux_loss_coef: 0 by default (the point of the bias); may be set to
        combine the two.
      **kwargs: TokensChooseRouter's other settings.

    Raises:
      ValueError: on a bad value, naming it and what would be right.
    """
    super().__init__(num_selected_experts=num_selected_experts,
                     policy=policy, aux_loss_coef=aux_loss_coef, **kwargs)
    bias_balance.check_rate(bias_update_rate)
    if policy == "sample":
      raise ValueError(
          "BiasBalancedRouter chooses experts by probability plus bias; "
          "policy='sample' draws them from the unbiased softmax.  Use "
          "'input_jitter', 'input_dropout' or 'argmax'")
    self.bias_update_rate = bias_update_rate

  def route(self, logits, capacity, nonpadding, train, activation_dtype,
            one_hot_tensors):
    experts_dim = logits.shape.dims[-1]
    with tf.variable_scope("router"):
      bias = bias_balance.expert_bias(experts_dim, logits.mesh)
    if train:
      hook = bias_balance.AssignOnBackward(logits)
      logits = hook.outputs[0]
    if nonpadding is None:
      nonpadding = mtf.ones(logits.mesh, logits.shape.dims[:2], tf.float32)
    nonpadding = mtf.to_float(nonpadding)
    instructions = routing.route(
        logits, self.num_selected_experts, capacity, nonpadding=nonpadding,
        policy=self.policy, train=train, activation_dtype=activation_dtype,
        aux_loss_coef=self.aux_loss_coef, z_loss_coef=self.z_loss_coef,
        one_hot_tensors=one_hot_tensors, score_bias=bias)
    if train:
      load = bias_balance.expert_load(instructions.assignments, nonpadding,
                                      experts_dim)
      hook.assign_later(
          bias, bias_balance.updated_bias(bias, load, self.bias_update_rate))
    return instructions



@gin.configurable(module="mtf_switch")
class BatchPrioritizedRouter(TokensChooseRouter):
  """Tokens choose their experts as in TokensChooseRouter (and its gin
  bindings), and take the experts' slots in order of router confidence,
  not position (batch-prioritized routing, Riquelme et al. 2021, "Scaling
  Vision with Sparse Mixture of Experts"): an overflowing expert drops its
  least confident tokens.  Its queues cost group_size^2 x experts
  multiply-adds per group.

    mtf_switch.SwitchFeedForward.router = @mtf_switch.BatchPrioritizedRouter()
  """
  batch_prioritized = True

  def check_dropless(self):
    raise ValueError(
        "BatchPrioritizedRouter orders the tokens only to decide which to "
        "drop, and dispatch_mode='dropless' drops none: use "
        "@mtf_switch.TokensChooseRouter() (the same routing without the "
        "group_size^2 x experts queue), or dispatch_mode='einsum' or 'index' "
        "to keep a capacity")


@gin.configurable(module="mtf_switch")
class NoTokenLeftBehindRouter(TokensChooseRouter):
  """Top-1 Switch routing, then passes for the tokens left behind: a token
  its expert had no room for tries its 2nd, 3rd, ... choice while slots
  are free ("no token left behind", the paper's appendix, where it gave no
  quality gain; mesh-tensorflow's "ntlb").

    mtf_switch.SwitchFeedForward.router = @mtf_switch.NoTokenLeftBehindRouter()
    mtf_switch.NoTokenLeftBehindRouter.passes = 2
  """

  def __init__(self, passes=2, **kwargs):
    """Records the router's settings.

    Args:
      passes: int >= 2, the choices a dropped token may try.
      **kwargs: as TokensChooseRouter's (top-1 only).

    Raises:
      ValueError: on passes < 2 or num_selected_experts != 1.
    """
    super().__init__(**kwargs)
    if not (isinstance(passes, int) and passes >= 2):
      raise ValueError("passes must be an int >= 2 (1 is TokensChooseRouter)"
                       ", got %r" % (passes,))
    if self.num_selected_experts != 1:
      raise ValueError("no-token-left-behind re-routes top-1 routing; got "
                       "num_selected_experts=%d" % self.num_selected_experts)
    self.passes = passes

  def check_dropless(self):
    raise ValueError(
        "NoTokenLeftBehindRouter re-routes the tokens that capacity leaves "
        "behind, and dispatch_mode='dropless' leaves none: use "
        "@mtf_switch.TokensChooseRouter() (top-1, the same routing), or "
        "dispatch_mode='einsum' or 'index' to keep a capacity")

  def check_num_experts(self, num_experts):
    super().check_num_experts(num_experts)
    if self.passes > num_experts:
      raise ValueError("passes=%d exceeds num_experts=%d (a token has only "
                       "that many choices)" % (self.passes, num_experts))


@gin.configurable(module="mtf_switch")
class ExpertsChooseRouter(Router):
  """Each expert picks the group's tokens it scores highest, `capacity` of
  them (expert-choice routing, Zhou et al. 2022, "Mixture-of-Experts with
  Expert Choice Routing"): every expert is full, so no balancing loss is
  needed (aux_loss_coef defaults to 0); a token may get several experts or
  none.  An expert's pick depends on every token of the group, later ones
  included, so causal (decoder) layers refuse it: it would leak the future.
  Its ranking costs group_size^2 x experts per group.

    mtf_switch.SwitchFeedForward.router = @mtf_switch.ExpertsChooseRouter()
  """

  def __init__(self, aux_loss_coef=0.0, z_loss_coef=0.0,
               float32_router=True):
    super().__init__(aux_loss_coef, z_loss_coef, float32_router)

  def check_context(self, context):
    if getattr(context.model, "autoregressive", False):
      raise ValueError(
          "ExpertsChooseRouter in a causal layer (%s) would let a token's "
          "routing depend on later tokens; use it in encoder layers only and "
          "a TokensChooseRouter in the decoder (e.g. with gin scopes "
          "encoder/mtf_switch.SwitchFeedForward.router = "
          "@mtf_switch.ExpertsChooseRouter())"
          % tf.get_variable_scope().name)

  def check_dropless(self):
    raise ValueError(
        "ExpertsChooseRouter has each expert take `capacity` tokens, and "
        "dispatch_mode='dropless' has no capacity: use it with "
        "dispatch_mode='einsum' or 'index', or route with "
        "@mtf_switch.TokensChooseRouter() for dropless dispatch")

  def route(self, logits, capacity, nonpadding, train, activation_dtype,
            one_hot_tensors):
    logits, probs = routing.router_probs(logits)
    if nonpadding is None:
      nonpadding = mtf.ones(logits.mesh, logits.shape.dims[:2], tf.float32)
    nonpadding = mtf.to_float(nonpadding)
    assignments, top = routing.experts_choose_assignments(
        probs, capacity, nonpadding)
    return routing.instructions(
        logits, probs, assignments, top, nonpadding, capacity,
        activation_dtype, self.aux_loss_coef, self.z_loss_coef,
        one_hot_tensors, choices_per_token=1)
