"""Routing math of the Switch Transformer on Mesh-TensorFlow tensors.

Pure functions, no variables but the router's: router logits, exploration
policies, top-1 (Switch), top-2 (MoE baseline) and top-k assignment with expert
capacity, the dispatch and combine tensors, the auxiliary losses, the
routing metrics, and the checks of the routing settings (one function per
rule).  The router objects that use them are in `mtf_switch.routers`.  Section numbers refer to Fedus, Zoph and Shazeer, "Switch
Transformers", JMLR 2022.

Shapes are written in mesh-dimension names.  The tokens of a layer are split
into `groups` of `group_size` tokens; the groups dimension keeps the name of
the batch dimension so that it follows the batch's split over the mesh.

Everything here runs in float32 whatever the activation dtype ("selective
precision", Section 2.4); only `RoutingInstructions.dispatch` and `.combine`
are cast back to the activation dtype.  The one exception is Table 2's
"bfloat16 everywhere" baseline (`routers.Router(float32_router=False)`):
there the router's logits and their softmax are taken in the activation
dtype (`router_logits`, `router_probs`) and only the bookkeeping after them
(slots, losses, metrics) in float32.
"""
import collections
import math

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch import guard

# Router exploration policies (Section 2.4, Table 11).  Perturbations apply
# in training only; evaluation always routes by argmax.
POLICIES = ("argmax", "input_jitter", "input_dropout", "sample")

# Small positive number that keeps renormalized top-k gates finite.
_EPSILON = 1e-9

Assignment = collections.namedtuple(
    "Assignment", ["expert_index", "position", "fits", "gate"])
Assignment.__doc__ = """One choice (first or second) of every token, by index.

Attributes (all [groups, group_size]):
  expert_index: int32, the chosen expert.
  position: int32, the slot in that expert's buffer (may be >= capacity).
  fits: float32, 1 if the token got its slot, 0 if dropped or padding.
  gate: float32, the gate value (renormalized over the choices for k >= 2).

A router's assignments before the capacity cut (`instructions` makes it)
have float32 positions and `fits` 1 for every token routed at all.
"""

RoutingInstructions = collections.namedtuple(
    "RoutingInstructions", ["dispatch", "combine", "metrics", "assignments"])
RoutingInstructions.__doc__ = """What a layer needs to move tokens to experts.

Attributes:
  dispatch: [groups, group_size, experts, capacity], activation dtype; 1 where
    a token takes a slot of an expert's buffer, else 0 (None unless asked).
  combine: same shape as dispatch; the gate value where dispatch is 1.
  assignments: list of Assignment, one per choice: the same routing by
    index (see mtf_switch.dispatch).
  metrics: dict of float32 scalars (and `expert_fraction`, [experts]):
    aux_loss (already scaled by its coefficient), z_loss (scaled; 0 when
    off), dropped_fraction, router_confidence, router_entropy,
    expert_fraction ([experts]), expert_fraction_max, expert_fraction_min.
"""


def check_capacity_factor(factor, name="capacity_factor"):
  """Raises ValueError unless the capacity factor `name` is > 0."""
  if not factor > 0:
    raise ValueError("%s must be > 0 (the paper uses 1.0 to 2.0), got %r"
                     % (name, factor))


def check_min_capacity(min_capacity):
  """Raises ValueError unless min_capacity is an int >= 1."""
  if not (isinstance(min_capacity, int) and min_capacity >= 1):
    raise ValueError("min_capacity must be an int >= 1 (4 in mesh-tensorflow "
                     "and flaxformer), got %r" % (min_capacity,))


def check_num_selected_experts(num_selected_experts, num_experts=None):
  """Raises ValueError unless an int k >= 1, and not more than there are
  experts: 1 is Switch, 2 the top-2 MoE, more the fine-grained experts of
  DeepSeekMoE (m x the experts at d_ff / m, top-(m k))."""
  if not (isinstance(num_selected_experts, int)
          and not isinstance(num_selected_experts, bool)
          and num_selected_experts >= 1) or (
              num_experts is not None and num_selected_experts > num_experts):
    raise ValueError(
        "num_selected_experts must be an int >= 1 (1: Switch, 2: top-2 MoE, "
        "m x k: fine-grained experts)%s, got %r"
        % ("" if num_experts is None
           else " and at most num_experts=%d" % num_experts,
           num_selected_experts))


def check_policy(policy):
  """Raises ValueError unless `policy` is one of POLICIES."""
  if policy not in POLICIES:
    raise ValueError("unknown router policy %r; expected one of %s"
                     % (policy, ", ".join(POLICIES)))


def check_rate(rate, name):
  """Raises ValueError unless the dropout rate `name` is in [0, 1)."""
  if not 0.0 <= rate < 1.0:
    raise ValueError("%s must be in [0, 1), got %r" % (name, rate))


def check_loss_coef(coef, name):
  """Raises ValueError unless the loss coefficient `name` is >= 0."""
  if not coef >= 0:
    raise ValueError("%s must be >= 0 (0 turns the loss off), got %r"
                     % (name, coef))


def expert_capacity(group_size, num_experts, capacity_factor,
                    min_capacity=4):
  """Slots per expert in each group (Section 2.2, "expert capacity").

  capacity = ceil(group_size / num_experts * capacity_factor), at least
  `min_capacity` (as in mesh-tensorflow and flaxformer) and at most
  `group_size`, which already holds every token of the group.

  Args:
    group_size: int, tokens per group.
    num_experts: int.
    capacity_factor: float > 0.
    min_capacity: int >= 1.

  Returns:
    int.

  Raises:
    ValueError: if capacity_factor <= 0 or min_capacity < 1.
  """
  check_capacity_factor(capacity_factor)
  check_min_capacity(min_capacity)
  capacity = int(math.ceil(group_size * capacity_factor / num_experts))
  return min(max(capacity, min_capacity), group_size)


def perturb_router_inputs(x, policy, train, jitter_eps=1e-2,
                          dropout_rate=0.1):
  """Applies an exploration policy's input perturbation (Section 2.4).

  Args:
    x: [groups, group_size, d_model], float32 router inputs.
    policy: one of POLICIES (see `check_policy`).
    train: bool; perturbations apply only in training.
    jitter_eps: float; "input_jitter" multiplies by U[1 - eps, 1 + eps].
    dropout_rate: float; dropout rate of "input_dropout".

  Returns:
    Tensor shaped like x.
  """
  if not train:
    return x
  if policy == "input_jitter":
    return mtf.layers.multiplicative_jitter(x, epsilon=jitter_eps)
  if policy == "input_dropout":
    return mtf.dropout(x, is_training=True, keep_prob=1.0 - dropout_rate)
  return x


def router_logits(x, experts_dim, variable_dtype, name="router"):
  """Router logits h(x) = W_r x, computed in x's dtype: float32 under
  selective precision (Sections 2.1, 2.4).

  Args:
    x: [groups, group_size, d_model] router inputs.
    experts_dim: mtf.Dimension, the experts.
    variable_dtype: mtf.VariableDType of the model; the router's weights keep
      its master and slice dtypes but are used in x's dtype.
    name: variable scope of the router weights [d_model, experts].

  Returns:
    [groups, group_size, experts], in x's dtype (checked finite where
    `guard.checked` is enabled).
  """
  use = mtf.VariableDType(
      master_dtype=variable_dtype.master_dtype,
      slice_dtype=variable_dtype.slice_dtype,
      activation_dtype=x.dtype)
  logits = mtf.layers.dense(
      x, experts_dim, use_bias=False, reduced_dims=x.shape.dims[-1:],
      variable_dtype=use, name=name)
  return guard.checked(
      logits, "router logits in %s" % tf.get_variable_scope().name)


def router_probs(logits):
  """The router's softmax over the experts, taken in the logits' dtype (the
  exponent whose rounding made bfloat16 routers diverge, Section 2.4).

  Args:
    logits: [groups, group_size, experts] router logits.

  Returns:
    (logits, probs), both float32: what the bookkeeping works on.
  """
  probs = mtf.softmax(logits, reduced_dim=logits.shape.dims[-1])
  return mtf.to_float(logits), mtf.to_float(probs)


def _gumbel_noise(like):
  """Gumbel(0, 1) noise: argmax(logits + noise) samples softmax(logits)."""
  uniform = mtf.random_uniform(like.mesh, like.shape, minval=1e-9,
                               maxval=1.0, dtype=tf.float32)
  return -mtf.log(-mtf.log(uniform))


def route(logits, num_selected_experts, capacity, nonpadding=None,
          policy="argmax", train=False, activation_dtype=tf.float32,
          aux_loss_coef=1e-2, z_loss_coef=0.0, one_hot_tensors=True,
          batch_prioritized=False, passes=1, score_bias=None):
  """Tokens choose their experts: top-1 (Switch), top-2 (MoE baseline) or
  top-k (fine-grained experts).

  Top-1 is the Switch layer of Section 2.1; top-2 the MoE baseline with
  its gates renormalized to sum to one, as are top-k's.  See `top_k_assignments` for the
  slots and `instructions` for what is built from them.

  Args:
    logits: [groups, group_size, experts] router logits, float32 (or the
      activation dtype; see `router_probs`).
    num_selected_experts: 1 (Switch), 2 (top-2 MoE) or more; see
      `check_num_selected_experts`.
    capacity: int, slots per expert and group (see `expert_capacity`).
    nonpadding: optional [groups, group_size], 1 for real tokens, 0 for
      padding.
    policy: one of POLICIES; "sample" draws the expert(s) from the router's
      softmax in training instead of taking the argmax.
    train: bool.
    activation_dtype: dtype of the returned dispatch and combine tensors.
    aux_loss_coef: alpha of the load-balancing loss (Section 2.2).
    z_loss_coef: coefficient of the router z-loss (ST-MoE); 0 turns it off.
    one_hot_tensors: build the dense dispatch and combine tensors (for the
      einsum path); otherwise they are None.
    batch_prioritized: tokens take their experts' slots in order of router
      confidence (their top-1 probability), not position (batch-
      prioritized routing, Riquelme et al. 2021): when an expert
      overflows, its least confident tokens are the ones dropped.
    passes: with top-1, the tokens an expert had no room for try their
      2nd, 3rd, ... choice in passes 2, 3, ..., taking what slots are left
      ("no token left behind", the paper's appendix; mesh-tensorflow's
      "ntlb"); 1 is plain Switch routing.
    score_bias: optional [experts] float32 added to the router
      probabilities to choose the experts, not to the gates (bias
      balancing, `mtf_switch.bias_balance`).

  Returns:
    RoutingInstructions.
  """
  if nonpadding is None:
    nonpadding = mtf.ones(logits.mesh, logits.shape.dims[:2], tf.float32)
  nonpadding = mtf.to_float(nonpadding)
  # [groups, group_size, experts], float32
  logits, probs = router_probs(logits)
  scores = logits if score_bias is None else probs + score_bias
  if train and policy == "sample":
    scores += _gumbel_noise(logits)
  priority = None
  if batch_prioritized:
    priority = mtf.reduce_max(probs, reduced_dim=probs.shape.dims[-1])
  assignments, first_choice = top_k_assignments(
      scores, probs, num_selected_experts, nonpadding, priority)
  if passes > 1:
    assignments = leftover_passes(assignments[0], scores, probs, capacity,
                                  nonpadding, passes)
  return instructions(logits, probs, assignments, first_choice, nonpadding,
                      capacity, activation_dtype, aux_loss_coef, z_loss_coef,
                      one_hot_tensors, choices_per_token=num_selected_experts)


def top_k_assignments(scores, probs, num_selected_experts, nonpadding,
                      priority=None):
  """Each real token's k best experts by score, with buffer positions.

  A token's position in its expert's buffer is the *exclusive* cumulative
  count, in token order, of the group's earlier tokens sent to that expert
  (Section 2.2; the paper's pseudo-code counts inclusively and admits one
  token too few); second choices queue behind all first choices.  Padding
  tokens are never routed.

  Args:
    scores: [groups, group_size, experts], float32; the argmax picks.
    probs: [groups, group_size, experts], float32 router probabilities; the
      gates (renormalized over the choices for k = 2).
    num_selected_experts: int, k.
    nonpadding: [groups, group_size], float32.
    priority: optional [groups, group_size] float32: tokens of higher
      priority come first in every expert's queue (ties: token order), in
      place of token order.

  Returns:
    (list of k Assignment before the capacity cut (see `instructions`),
    the first choice as a one-hot [groups, group_size, experts] float32,
    zero on padding).
  """
  groups_dim, group_size_dim, experts_dim = scores.shape.dims
  indices, gates, masks, positions = [], [], [], []
  # [groups, experts]: slots already taken by earlier choices.
  taken = mtf.zeros(scores.mesh, [groups_dim, experts_dim], tf.float32)
  for _ in range(num_selected_experts):
    # [groups, group_size]
    index = mtf.argmax(scores, reduced_dim=experts_dim)
    # [groups, group_size, experts]
    mask = mtf.one_hot(index, experts_dim, dtype=tf.float32) * nonpadding
    if priority is None:
      position = cumsum(mask, group_size_dim, exclusive=True) + taken
    else:
      position = _count_ahead(mask, priority) + taken
    taken += mtf.reduce_sum(mask, reduced_dim=group_size_dim)
    indices.append(index)
    gates.append(mtf.reduce_sum(probs * mask, reduced_dim=experts_dim))
    masks.append(mask)
    positions.append(mtf.reduce_sum(position * mask, reduced_dim=experts_dim))
    scores -= mask * 1e9  # the next choice is another expert
  if num_selected_experts >= 2:
    total = _EPSILON
    for gate in gates:
      total += gate
    gates = [g / total for g in gates]
  assignments = [
      Assignment(expert_index=index, position=position,
                 fits=mtf.reduce_sum(mask, reduced_dim=experts_dim),
                 gate=gate)
      for index, gate, mask, position in zip(indices, gates, masks, positions)]
  return assignments, masks[0]


def leftover_passes(first, scores, probs, capacity, nonpadding, passes):
  """Top-1 assignments plus passes for the tokens left behind.

  Pass j (j = 2 ... passes) offers every real token that has no slot yet
  its j-th choice, in token order, behind the tokens already placed there;
  it is placed if that expert still has a free slot.  Its gate is the
  router probability of the expert that takes it.

  Args:
    first: the top-1 Assignment before the capacity cut.
    scores: [groups, group_size, experts], float32; the choices' order.
    probs: [groups, group_size, experts], float32 router probabilities.
    capacity: int.
    nonpadding: [groups, group_size], float32.
    passes: int >= 2.

  Returns:
    list of `passes` Assignment, each with its capacity cut made (a token
    is placed by at most one).
  """
  experts_dim = scores.shape.dims[-1]
  group_size_dim = scores.shape.dims[1]
  fits = first.fits * mtf.to_float(mtf.less(first.position,
                                            float(capacity)))
  result = [first._replace(fits=fits)]
  mask = mtf.one_hot(first.expert_index, experts_dim, dtype=tf.float32)
  placed = fits
  # [groups, experts]: slots taken so far.
  taken = mtf.reduce_sum(mask * fits, reduced_dim=group_size_dim)
  for _ in range(passes - 1):
    scores -= mask * 1e9  # the next choice is another expert
    index = mtf.argmax(scores, reduced_dim=experts_dim)
    mask = mtf.one_hot(index, experts_dim, dtype=tf.float32)
    waiting = mask * nonpadding * (1.0 - placed)
    position = mtf.reduce_sum(
        (cumsum(waiting, group_size_dim, exclusive=True) + taken)
        * waiting, reduced_dim=experts_dim)
    fits = (mtf.reduce_sum(waiting, reduced_dim=experts_dim)
            * mtf.to_float(mtf.less(position, float(capacity))))
    result.append(Assignment(
        expert_index=index, position=position, fits=fits,
        gate=mtf.reduce_sum(probs * mask, reduced_dim=experts_dim)))
    placed += fits
    taken += mtf.reduce_sum(mask * fits, reduced_dim=group_size_dim)
  return result


def experts_choose_assignments(probs, capacity, nonpadding):
  """Each expert takes the `capacity` real tokens of the group to which it
  gives the highest router probability (expert-choice routing, Zhou et al.
  2022); a token may be taken by several experts or by none.

  Args:
    probs: [groups, group_size, experts], float32 router probabilities.
    capacity: int, tokens per expert and group.
    nonpadding: [groups, group_size], float32.

  Returns:
    (list of one Assignment per expert, its capacity cut made, with gate
    p_e(x); the tokens' own top choice, one-hot, zero on padding).
  """
  experts_dim = probs.shape.dims[-1]
  candidates = probs * 0.0 + nonpadding  # [groups, group_size, experts]
  # Padding ranks behind every real token.
  position = _count_ahead(candidates, probs + (nonpadding - 1.0) * 2.0)
  fits = mtf.to_float(mtf.less(position, float(capacity))) * candidates
  assignments = []
  for e in range(experts_dim.size):
    pick = mtf.one_hot(mtf.constant(probs.mesh, e, dtype=tf.int32),
                       experts_dim, dtype=tf.float32)
    assignments.append(Assignment(
        expert_index=mtf.zeros(probs.mesh, nonpadding.shape, tf.int32) + e,
        position=mtf.reduce_sum(position * pick, reduced_dim=experts_dim),
        fits=mtf.reduce_sum(fits * pick, reduced_dim=experts_dim),
        gate=mtf.reduce_sum(probs * pick, reduced_dim=experts_dim)))
  top = mtf.one_hot(mtf.argmax(probs, reduced_dim=experts_dim), experts_dim,
                    dtype=tf.float32) * nonpadding
  return assignments, top


def cumsum(x, dim, exclusive=False):
  """Cumulative sum of x along dim, as mtf.cumsum, in O(dim.size) a row.

  mtf.cumsum multiplies by a [dim, dim] triangular matrix: group_size^2 x
  experts multiply-adds a group for the slot positions, which at 2048-token
  groups and 64 experts (d_model 128, d_ff 512) is four fifths of the
  experts' forward matmuls.  Here every slice runs tf.cumsum: the
  group_size dimension is never split over the mesh (groups and experts
  are), so a slice holds whole rows.

  Args:
    x: a Tensor.
    dim: a Dimension of x; must not be split by the layout (lowering raises
      a ValueError naming it if it is).
    exclusive: bool; if True, each sum leaves out its own element.

  Returns:
    a Tensor with the shape and dtype of x.
  """
  return _CumsumOperation(x, dim, exclusive).outputs[0]


class _CumsumOperation(mtf.SlicewiseOperation):
  """tf.cumsum on every slice; refuses, naming it, a layout that splits the
  summed dimension (mtf.SlicewiseOperation's own message fails to
  format)."""

  def __init__(self, x, dim, exclusive):
    axis = x.shape.dims.index(dim)
    super().__init__(
        lambda t: tf.cumsum(t, axis=axis, exclusive=exclusive), [x],
        [x.shape], [x.dtype],
        splittable_dims=[d for d in x.shape.dims if d != dim], name="cumsum")
    self._dim = dim

  def lower(self, lowering):
    if lowering.mesh_impl(self).tensor_dimension_to_mesh_axis(
        self._dim) is not None:
      raise ValueError(
          "cumsum runs along %r, which the layout splits over the mesh; "
          "lay out only the other dimensions (%s)" % (
              self._dim.name, ", ".join(d.name for d in
                                        self.inputs[0].shape.dims
                                        if d != self._dim)))
    super().lower(lowering)


def _count_ahead(mask, priority):
  """For every token and expert, how many of the group's tokens sent to
  that expert come before it: higher priority, or equal and earlier.

  Costs group_size^2 x experts multiply-adds per group (a pairwise
  comparison stands in for a sort, which mesh-tensorflow lacks).

  Args:
    mask: [groups, group_size, experts], float32 one-hot choices.
    priority: [groups, group_size], float32, or [groups, group_size,
      experts] (each expert its own order).

  Returns:
    [groups, group_size, experts], float32.
  """
  groups_dim, group_size_dim, experts_dim = mask.shape.dims
  other_dim = mtf.Dimension("other_tokens", group_size_dim.size)
  other_priority = mtf.rename_dimension(priority, group_size_dim.name,
                                        other_dim.name)
  index = mtf.range(mask.mesh, group_size_dim, tf.float32)
  other_index = mtf.range(mask.mesh, other_dim, tf.float32)
  # [groups, group_size, other_tokens(, experts)]: 1 where the other token
  # comes first.
  ahead = mtf.to_float(mtf.logical_or(
      mtf.greater(other_priority, priority),
      mtf.logical_and(mtf.equal(other_priority, priority),
                      mtf.less(other_index, index))))
  other_mask = mtf.rename_dimension(mask, group_size_dim.name, other_dim.name)
  return mtf.einsum([ahead, other_mask],
                    output_shape=[groups_dim, group_size_dim, experts_dim])


def instructions(logits, probs, assignments, first_choice, nonpadding,
                 capacity, activation_dtype=tf.float32, aux_loss_coef=1e-2,
                 z_loss_coef=0.0, one_hot_tensors=True,
                 choices_per_token=None):
  """Drops what is over capacity; adds dispatch/combine, losses, metrics.

  Shared by every router: a router decides who goes where and in which
  order (`assignments`), this keeps the assignments whose position is below
  `capacity` (the others are dropped, get a zero layer output and ride the
  residual connection, Section 2.2) and computes the load-balancing loss,
  the z-loss and the routing metrics the same way for all.

  Args:
    logits: [groups, group_size, experts], float32 router logits.
    probs: softmax of logits.
    assignments: list of Assignment before the capacity cut: float32
      positions, and `fits` 1 for tokens the choice routes at all (0 for
      padding).
    first_choice: [groups, group_size, experts], the one-hot first choice
      (zero on padding): f_i of the load-balancing loss.
    nonpadding: [groups, group_size], float32.
    capacity: int, slots per expert and group.
    activation_dtype: dtype of the dispatch and combine tensors.
    aux_loss_coef: alpha of the load-balancing loss.
    z_loss_coef: coefficient of the router z-loss; 0 turns it off.
    one_hot_tensors: build the dense dispatch and combine tensors.
    choices_per_token: experts a token should reach (the denominator of
      dropped_fraction); default len(assignments).  With expert choice, 1:
      dropped_fraction is then the share of tokens no expert took.

  Returns:
    RoutingInstructions.
  """
  groups_dim, group_size_dim, experts_dim = logits.shape.dims
  choices_per_token = choices_per_token or len(assignments)
  kept = mtf.zeros(logits.mesh, [groups_dim, group_size_dim], tf.float32)
  kept_assignments = []
  for a in assignments:
    # [groups, group_size]: 1 iff the token found a slot (never padding).
    fits = a.fits * mtf.to_float(mtf.less(a.position, float(capacity)))
    kept += fits
    kept_assignments.append(a._replace(position=mtf.to_int32(a.position),
                                       fits=fits))
  dispatch = combine = None
  if one_hot_tensors:
    dispatch, combine = one_hot_instructions(
        kept_assignments, experts_dim, mtf.Dimension("capacity", capacity))
    dispatch = mtf.cast(dispatch, activation_dtype)
    combine = mtf.cast(combine, activation_dtype)

  num_tokens = mtf.maximum(mtf.reduce_sum(nonpadding), 1.0)
  # A token served by more experts than it chose (expert choice) is not
  # counted twice.
  metrics = router_metrics(
      logits, probs, first_choice,
      mtf.minimum(kept, float(choices_per_token)), nonpadding, num_tokens,
      choices_per_token)
  metrics["aux_loss"] = aux_loss_coef * load_balancing_loss(
      probs, first_choice, nonpadding, num_tokens)
  metrics["z_loss"] = z_loss_coef * router_z_loss(logits, nonpadding,
                                                  num_tokens)
  return RoutingInstructions(dispatch=dispatch, combine=combine,
                             metrics=metrics, assignments=kept_assignments)


def one_hot_instructions(assignments, experts_dim, capacity_dim):
  """Dense float32 dispatch and combine tensors from the assignments.

  Returns:
    (dispatch, combine), [groups, group_size, experts, capacity] each.
  """
  dispatch = combine = 0
  for a in assignments:
    # one_hot of a position >= capacity is all zeros; `fits` also zeroes
    # padding and dropped tokens.
    slot = (mtf.one_hot(a.expert_index, experts_dim, dtype=tf.float32) *
            mtf.one_hot(a.position, capacity_dim, dtype=tf.float32) * a.fits)
    dispatch += slot
    combine += slot * a.gate
  return dispatch, combine


def load_balancing_loss(probs, top1_mask, nonpadding, num_tokens):
  """N * sum_i f_i * P_i over the batch's real tokens (Section 2.2, eq. 4).

  f_i is the fraction of tokens whose first choice is expert i, P_i the
  fraction of router probability given to expert i.  Equals 1 when routing
  is uniform; the caller scales it by alpha.

  Args:
    probs: [groups, group_size, experts], float32 router probabilities.
    top1_mask: [groups, group_size, experts], one-hot first choice, zero on
      padding.
    nonpadding: [groups, group_size], float32.
    num_tokens: float32 scalar, the number of real tokens T.

  Returns:
    float32 scalar.
  """
  experts_dim = probs.shape.dims[-1]
  # [experts]
  fraction_routed = mtf.reduce_sum(top1_mask, output_shape=[experts_dim])
  fraction_routed /= num_tokens
  fraction_prob = mtf.reduce_sum(probs * nonpadding,
                                 output_shape=[experts_dim]) / num_tokens
  return float(experts_dim.size) * mtf.reduce_sum(fraction_routed *
                                                  fraction_prob)


def router_z_loss(logits, nonpadding, num_tokens):
  """mean_x (logsumexp_i h_i(x))^2 over real tokens (ST-MoE's z-loss).

  Args:
    logits: [groups, group_size, experts], float32.
    nonpadding: [groups, group_size], float32.
    num_tokens: float32 scalar.

  Returns:
    float32 scalar.
  """
  log_z = mtf.reduce_logsumexp(logits, reduced_dim=logits.shape.dims[-1])
  return mtf.reduce_sum(mtf.square(log_z) * nonpadding) / num_tokens


def router_metrics(logits, probs, top1_mask, kept, nonpadding, num_tokens,
                   num_selected_experts):
  """Routing metrics of one layer, all over the real tokens.

  Args:
    logits: [groups, group_size, experts], float32.
    probs: softmax of logits.
    top1_mask: [groups, group_size, experts], one-hot first choice.
    kept: [groups, group_size], number of the token's choices that found a
      slot.
    nonpadding: [groups, group_size], float32.
    num_tokens: float32 scalar.
    num_selected_experts: int.

  Returns:
    dict: dropped_fraction (of token-to-expert assignments), expert_fraction
    ([experts], share of first choices per expert) with its max and min,
    router_confidence (mean
    top-1 probability), router_entropy (mean entropy of the router's
    distribution, in nats).
  """
  experts_dim = probs.shape.dims[-1]
  assigned = num_tokens * float(num_selected_experts)
  # Zero, not one, when the batch is all padding: nothing was dropped.
  unplaced = (mtf.reduce_sum(nonpadding) * float(num_selected_experts)
              - mtf.reduce_sum(kept))
  top1_prob = mtf.reduce_max(probs, reduced_dim=experts_dim)
  log_probs = mtf.log_softmax(logits, reduced_dim=experts_dim)
  entropy = -mtf.reduce_sum(probs * log_probs, reduced_dim=experts_dim)
  expert_fraction = mtf.reduce_sum(
      top1_mask, output_shape=[experts_dim]) / num_tokens
  return {
      "dropped_fraction": unplaced / assigned,
      "expert_fraction": expert_fraction,
      "expert_fraction_max": mtf.reduce_max(expert_fraction),
      "expert_fraction_min": mtf.reduce_min(expert_fraction),
      "router_confidence": mtf.reduce_sum(top1_prob * nonpadding) / num_tokens,
      "router_entropy": mtf.reduce_sum(entropy * nonpadding) / num_tokens,
  }
