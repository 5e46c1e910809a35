r"""Adafactor's update of one expert weight: three ways to run it, in turns.

Issue 29's profile (docs/performance.md, "Where a step's time goes") puts
Adafactor's update of the expert weights at 28 ms of Switch-64's step on
this CPU: mesh-tensorflow's AdafactorOptimizer runs it as a dozen
element-wise TensorFlow ops, each a pass over the weight.  This times the
update of one [experts, d_model, d_ff] weight with its factored
statistics, on a fixed gradient, as

  ops        mesh-tensorflow's sequence of TensorFlow ops (its math,
             unfused): square, row and column means, rsqrt factors, the
             update, its RMS clipping, the parameter scale
  fused      the same update in fewer passes: the squared gradient once,
             the clipping's RMS from the factors (sum_e r^2 . (g^2 @ c^2))
             instead of the full update, the parameter scale as one dot
             product, the factors folded into one broadcast multiply
  xla        the `ops` graph compiled by XLA (jit_scope)

in rounds, each round every variant once, and reports the median time per
update and the largest difference of the weights from `ops` after the
same updates.

  python benchmarks/adafactor_update.py --out benchmarks/results
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import tensorflow.compat.v1 as tf

VARIANTS = ("ops", "fused", "xla")
DECAY, LEARNING_RATE, EPSILON1, EPSILON2 = 0.9, 1e-2, 1e-30, 1e-3


def _ops_update(grad, var, vr, vc):
  grad_squared = tf.square(grad) + EPSILON1
  new_vr = vr * DECAY + tf.reduce_mean(grad_squared, 2) * (1 - DECAY)
  new_vc = vc * DECAY + tf.reduce_mean(grad_squared, 1) * (1 - DECAY)
  r_factor = tf.math.rsqrt(new_vr / tf.reduce_mean(new_vr, 1, keepdims=True))
  c_factor = tf.math.rsqrt(new_vc)
  x = grad * r_factor[:, :, None] * c_factor[:, None, :]
  x /= tf.maximum(1.0, tf.sqrt(tf.reduce_mean(tf.square(x))))
  scale = tf.maximum(tf.sqrt(tf.reduce_mean(tf.square(var))),
                     EPSILON2) * LEARNING_RATE
  return [tf.assign(vr, new_vr), tf.assign(vc, new_vc),
          tf.assign_sub(var, x * scale)]


def _fused_update(grad, var, vr, vc):
  size = float(np.prod(var.shape.as_list()))
  grad_squared = tf.square(grad)
  new_vr = vr * DECAY + (tf.reduce_mean(grad_squared, 2) + EPSILON1) * (
      1 - DECAY)
  new_vc = vc * DECAY + (tf.reduce_mean(grad_squared, 1) + EPSILON1) * (
      1 - DECAY)
  r_factor = tf.math.rsqrt(new_vr / tf.reduce_mean(new_vr, 1, keepdims=True))
  c_factor = tf.math.rsqrt(new_vc)
  # mean(x^2) without x: sum_e r_e^2 . (g^2 @ c_e^2).
  by_row = tf.einsum("eij,ej->ei", grad_squared, tf.square(c_factor))
  denominator = tf.maximum(1.0, tf.sqrt(
      tf.reduce_sum(by_row * tf.square(r_factor)) / size))
  flat = tf.reshape(var, [-1])
  scale = tf.maximum(tf.sqrt(tf.tensordot(flat, flat, 1) / size),
                     EPSILON2) * LEARNING_RATE
  columns = c_factor * (scale / denominator)
  return [tf.assign(vr, new_vr), tf.assign(vc, new_vc),
          tf.assign_sub(var, grad * r_factor[:, :, None]
                        * columns[:, None, :])]


def _build(variant, shape, grad_value):
  graph = tf.Graph()
  with graph.as_default():
    var = tf.get_variable("var", shape, initializer=tf.ones_initializer())
    vr = tf.get_variable("vr", shape[:2], initializer=tf.zeros_initializer())
    vc = tf.get_variable("vc", [shape[0], shape[2]],
                         initializer=tf.zeros_initializer())
    grad = tf.constant(grad_value)
    if variant == "xla":
      with tf.xla.experimental.jit_scope():
        update = tf.group(_ops_update(grad, var, vr, vc))
    else:
      update = tf.group((_fused_update if variant == "fused" else _ops_update)(
          grad, var, vr, vc))
    init = tf.global_variables_initializer()
  session = tf.Session(graph=graph)
  session.run(init)
  return session, update, var


def measure(shape, rounds, updates):
  """{variant: {"ms": [per round], "max_diff": vs ops}}."""
  rng = np.random.RandomState(0)
  grad_value = (rng.randn(*shape) * 1e-3).astype(np.float32)
  built = {v: _build(v, shape, grad_value) for v in VARIANTS}
  for session, update, _ in built.values():
    for _ in range(3):  # warm-up (and XLA's compilation)
      session.run(update)
  times = {v: [] for v in VARIANTS}
  for r in range(rounds):
    for variant in VARIANTS:
      session, update, _ = built[variant]
      start = time.perf_counter()
      for _ in range(updates):
        session.run(update)
      times[variant].append(1e3 * (time.perf_counter() - start) / updates)
    print("round %d/%d: %s" % (r + 1, rounds, ", ".join(
        "%s %.1f ms" % (v, times[v][-1]) for v in VARIANTS)), flush=True)
  weights = {v: built[v][0].run(built[v][2]) for v in VARIANTS}
  return {v: {"ms": times[v],
              "max_diff": float(np.abs(weights[v] - weights["ops"]).max())}
          for v in VARIANTS}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--experts", type=int, default=64)
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--d_ff", type=int, default=512)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--updates", type=int, default=20)
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args()
  tf.disable_eager_execution()
  shape = [args.experts, args.d_model, args.d_ff]
  results = measure(shape, args.rounds, args.updates)
  lines = [
      "Adafactor's update of one %s weight, median ms over %d rounds of %d "
      "updates, variants in turns (%s)" % (
          "x".join(map(str, shape)), args.rounds, args.updates,
          time.strftime("%Y-%m-%d")), "",
      "| variant | ms (median) | max - min | vs ops | max weight diff vs ops |",
      "|---|---|---|---|---|"]
  base = statistics.median(results["ops"]["ms"])
  for variant in VARIANTS:
    ms = results[variant]["ms"]
    lines.append("| %s | %.2f | %.2f | %.2f | %.1e |" % (
        variant, statistics.median(ms), max(ms) - min(ms),
        statistics.median(ms) / base, results[variant]["max_diff"]))
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "adafactor_update.json"), "w") as f:
    json.dump(dict(shape=shape, rounds=args.rounds, updates=args.updates,
                   results=results), f, indent=1)
  with open(os.path.join(args.out, "adafactor_update.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
