r"""Why Switch steps grow with the expert count on CPU: the experts' matmuls.

At a fixed number of tokens per step, each of E experts sees about
tokens * capacity_factor / E rows.  This times the matmuls of one FFN
weight as TensorFlow runs them, once for the dense FFN over all tokens and
once for E experts over their capacity slots, with the shapes of
benchmarks/dispatch.py (4096 tokens, d_model 256, d_ff 1024, capacity
factor 1.25, group size 1024), and reports the time per FLOP relative to the
dense matmul.  The two gradients are timed with the operand order that
mesh-tensorflow's einsum gradient uses (`einsum([dy, other])`) and with the
other order: the order decides whether TensorFlow's batched matmul has to
transpose its result.

  python benchmarks/expert_matmul.py --out benchmarks/results

writes expert_matmul.json and expert_matmul.csv.
"""
import argparse
import csv
import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf

TOKENS, D_MODEL, D_FF = 4096, 256, 1024
GROUP_SIZE, CAPACITY_FACTOR = 1024, 1.25


def time_einsum(equation, shapes, repeats):
  """Median wall time of tf.einsum(equation) on random inputs, in seconds."""
  rng = np.random.RandomState(0)
  operands = [tf.constant(rng.randn(*s).astype(np.float32)) for s in shapes]
  run = tf.function(lambda *xs: tf.einsum(equation, *xs))
  run(*operands).numpy()  # trace and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(*operands).numpy()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def cases(experts):
  """(name, equation, shapes, multiply-adds) of one FFN weight's matmuls."""
  if not experts:
    x, h, w = (TOKENS, D_MODEL), (TOKENS, D_FF), (D_MODEL, D_FF)
    macs = TOKENS * D_MODEL * D_FF
    return [("forward", "tm,mf->tf", [x, w], macs),
            ("input_grad_mtf_order", "tf,mf->tm", [h, w], macs),
            ("input_grad_reordered", "mf,tf->tm", [w, h], macs),
            ("weight_grad_mtf_order", "tf,tm->mf", [h, x], macs),
            ("weight_grad_reordered", "tm,tf->mf", [x, h], macs)]
  groups = TOKENS // GROUP_SIZE
  capacity = int(np.ceil(GROUP_SIZE * CAPACITY_FACTOR / experts))
  # [experts, groups, capacity, d_model], as the index dispatch lays it out.
  x, h = ((experts, groups, capacity, D_MODEL),
          (experts, groups, capacity, D_FF))
  w = (experts, D_MODEL, D_FF)
  macs = experts * groups * capacity * D_MODEL * D_FF
  return [("forward", "egcm,emf->egcf", [x, w], macs),
          ("input_grad_mtf_order", "egcf,emf->egcm", [h, w], macs),
          ("input_grad_reordered", "emf,egcf->egcm", [w, h], macs),
          ("weight_grad_mtf_order", "egcf,egcm->emf", [h, x], macs),
          ("weight_grad_reordered", "egcm,egcf->emf", [x, h], macs)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="benchmarks/results")
  parser.add_argument("--repeats", type=int, default=15)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  rows, dense_rate = [], {}
  for experts in (0, 8, 32, 128):
    for name, equation, shapes, macs in cases(experts):
      seconds = time_einsum(equation, shapes, args.repeats)
      rate = seconds / macs
      # Baseline: the dense model's matmul in the same role, in the operand
      # order mesh-tensorflow gives it.
      role = name.replace("_reordered", "_mtf_order")
      if not experts and name == role:
        dense_rate[role] = rate
      rows.append({
          "experts": experts, "matmul": name, "equation": equation,
          "rows_per_expert": shapes[0][1] * shapes[0][2] if experts
                             else TOKENS,
          "seconds": seconds, "gflops": 2 * macs / seconds / 1e9,
          "time_per_flop_vs_dense": rate / dense_rate[role]})
      print("experts %3d %-22s %-16s %.4f s  %.1f GFLOP/s  %.2fx dense "
            "time per FLOP" % (experts, name, equation, seconds,
                               rows[-1]["gflops"],
                               rows[-1]["time_per_flop_vs_dense"]),
            flush=True)
  with open(os.path.join(args.out, "expert_matmul.json"), "w") as f:
    json.dump(rows, f, indent=1)
  with open(os.path.join(args.out, "expert_matmul.csv"), "w",
            newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


if __name__ == "__main__":
  main()
