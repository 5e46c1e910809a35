"""The paper's routing equations, written again in plain numpy, token by token.

Independent of mtf_switch: a loop over groups and tokens that fills expert
buffers in token order, as Section 2.2 of the paper describes, for checking
the vectorized mesh-tensorflow code.
"""
import numpy as np


def softmax(logits):
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _empty_routing(logits, capacity, nonpadding):
  """(probs, nonpadding, zero dispatch, zero combine [G, S, E, C])."""
  probs = softmax(np.asarray(logits, np.float64))
  num_groups, group_size, num_experts = probs.shape
  if nonpadding is None:
    nonpadding = np.ones((num_groups, group_size))
  dispatch = np.zeros((num_groups, group_size, num_experts, capacity))
  return probs, nonpadding, dispatch, np.zeros_like(dispatch)


def route(logits, k, capacity, nonpadding=None, aux_loss_coef=1e-2,
          z_loss_coef=0.0, batch_prioritized=False, passes=1):
  """Routes [groups, group_size, experts] logits; see routing.route.

  batch_prioritized: tokens queue by descending top-1 probability (stable
  in token order) instead of token order.
  passes: with k = 1, tokens left without a slot try their next choice,
  pass after pass, where slots are free ("no token left behind").

  Returns:
    dict with dispatch and combine [G, S, E, C], aux_loss, z_loss,
    dropped_fraction, expert_fraction [E], router_confidence,
    router_entropy, and kept [G, S] (choices that found a slot).
  """
  probs, nonpadding, dispatch, combine = _empty_routing(logits, capacity,
                                                        nonpadding)
  num_groups, group_size, num_experts = probs.shape
  kept = np.zeros((num_groups, group_size))
  first_choice_counts = np.zeros(num_experts)
  for g in range(num_groups):
    order = np.argsort(-probs[g], axis=-1, kind="stable")[:, :k]
    gates = np.take_along_axis(probs[g], order, axis=-1)
    if k >= 2:
      gates = gates / gates.sum(-1, keepdims=True)
    fill = np.zeros(num_experts, int)
    queue = range(group_size)
    if batch_prioritized:
      queue = np.argsort(-probs[g].max(-1), kind="stable")
    for choice in range(k):  # all first choices queue before second ones
      for s in queue:
        if not nonpadding[g, s]:
          continue
        e = order[s, choice]
        if choice == 0:
          first_choice_counts[e] += 1
        if fill[e] < capacity:
          dispatch[g, s, e, fill[e]] = 1.0
          combine[g, s, e, fill[e]] = gates[s, choice]
          kept[g, s] += 1
        fill[e] += 1
    if passes > 1:
      _leftover_passes(probs[g], nonpadding[g], capacity, passes,
                       dispatch[g], combine[g], kept[g])
  num_tokens = max(nonpadding.sum(), 1.0)
  f = first_choice_counts / num_tokens
  p = (probs * nonpadding[..., None]).sum((0, 1)) / num_tokens
  log_z = np.log(np.exp(np.asarray(logits, np.float64)).sum(-1))
  entropy = -(probs * np.log(probs)).sum(-1)
  return {
      "dispatch": dispatch,
      "combine": combine,
      "kept": kept,
      "aux_loss": aux_loss_coef * num_experts * (f * p).sum(),
      "z_loss": z_loss_coef * (log_z ** 2 * nonpadding).sum() / num_tokens,
      "dropped_fraction": (k * nonpadding.sum() - kept.sum())
                          / (k * num_tokens),
      "expert_fraction": f,
      "router_confidence": (probs.max(-1) * nonpadding).sum() / num_tokens,
      "router_entropy": (entropy * nonpadding).sum() / num_tokens,
  }


def experts_choose(logits, capacity, nonpadding=None):
  """Expert-choice routing of [groups, group_size, experts] logits: each
  expert takes its `capacity` highest-probability real tokens (ties: token
  order).

  Returns:
    dict with dispatch and combine [G, S, E, C] and dropped_fraction (real
    tokens no expert took).
  """
  probs, nonpadding, dispatch, combine = _empty_routing(logits, capacity,
                                                        nonpadding)
  num_groups, _, num_experts = probs.shape
  for g in range(num_groups):
    for e in range(num_experts):
      real = [s for s in np.argsort(-probs[g, :, e], kind="stable")
              if nonpadding[g, s]]
      for slot, s in enumerate(real[:capacity]):
        dispatch[g, s, e, slot] = 1.0
        combine[g, s, e, slot] = probs[g, s, e]
  served = dispatch.sum((2, 3)) > 0
  return {"dispatch": dispatch, "combine": combine,
          "dropped_fraction": 1.0 - served.sum() / nonpadding.sum()}


def _leftover_passes(probs, nonpadding, capacity, passes, dispatch, combine,
                    kept):
  """Fills dispatch/combine [S, E, C] and kept [S] of one group in place:
  unplaced tokens take their 2nd, 3rd ... choice while it has room."""
  order = np.argsort(-probs, axis=-1, kind="stable")
  used = dispatch.sum((0, 2)).astype(int)  # slots taken per expert
  for choice in range(1, passes):
    for s in range(len(probs)):
      if not nonpadding[s] or kept[s]:
        continue
      e = order[s, choice]
      if used[e] < capacity:
        dispatch[s, e, used[e]] = 1.0
        combine[s, e, used[e]] = probs[s, e]
        kept[s] = 1
        used[e] += 1


def relu(x):
  return np.maximum(x, 0.0)


def gelu(x):
  """tanh approximation, as mtf.gelu."""
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi)
                                  * (x + 0.044715 * x ** 3)))


def switch_layer(x, router_w, wi, wo, k, capacity, group_size,
                 nonpadding=None, wi_linear=None, **routing):
  """The Switch FFN layer on x: [tokens..., d_model], token by token.

  Args:
    x: [batch, length, d_model].
    router_w: [d_model, experts].
    wi: [experts, d_model, d_ff]; with wi_linear, the GELU branch of GEGLU.
    wo: [experts, d_ff, d_model].
    k: 1 or 2.
    capacity: int.
    group_size: int.
    nonpadding: optional [batch, length].
    wi_linear: optional [experts, d_model, d_ff], GEGLU's linear branch.
    **routing: more arguments of `route` (batch_prioritized, passes).

  Returns:
    (y [batch, length, d_model], routing dict of `route`).
  """
  shape = x.shape
  tokens = x.reshape(-1, group_size, shape[-1]).astype(np.float64)
  mask = None if nonpadding is None else nonpadding.reshape(-1, group_size)
  routed = route(tokens @ router_w, k, capacity, mask, **routing)
  y = np.zeros_like(tokens)
  for g, s, e, c in zip(*np.nonzero(routed["dispatch"])):
    if wi_linear is None:
      hidden = relu(tokens[g, s] @ wi[e])
    else:
      hidden = gelu(tokens[g, s] @ wi[e]) * (tokens[g, s] @ wi_linear[e])
    y[g, s] += routed["combine"][g, s, e, c] * (hidden @ wo[e])
  return y.reshape(shape), routed
