r"""Training-step time and memory: dense vs Switch (einsum, index, dropless) vs mtf MoE1D.

One command measures, side by side in one run, a decoder-only language model
(d_model 256, d_ff 1024, 4 layers of which 2 are sparse, 16 x 256 tokens per
step, Adafactor) in these variants, all FLOP-matched:

  dense            every FFN is mtf's DenseReluDense
  switch_einsum    mtf_switch.SwitchFeedForward, one-hot einsum dispatch
  switch_index     mtf_switch.SwitchFeedForward, dispatch by index
  switch_dropless  mtf_switch.SwitchFeedForward, no capacity: each expert
                   computes the rows routed to it (the capacity factor is
                   unused; its rows repeat the measurement)
  mtf_moe1d        mesh-tensorflow's MoE1D with switch gating

for experts in {8, 32, 128}, group size in {256, 1024, 4096}, capacity
factor 1.25 (and 1.0 at group size 1024).  Each measurement runs in its own
process (so peak memory is its own): median step time over --steps steps
after --warmup steps, tokens/s, and peak RSS.  Variants of one shape run
back to back and the dense model is measured again before each shape, so
that the machine's drift hits all alike.

  python benchmarks/dispatch.py --out benchmarks/results

writes results.json, results.csv and results.png (time relative to the
dense model, of the whole training step and of its forward and backward pass
without the optimizer's update).
"""
import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time

D_MODEL, D_FF, NUM_HEADS, D_KV, LAYERS = 256, 1024, 4, 64, 4
BATCH, LENGTH, VOCAB = 16, 256, 1024
VARIANTS = ("switch_einsum", "switch_index", "switch_dropless", "mtf_moe1d")


def shapes(group_sizes=(256, 1024, 4096)):
  """(experts, group_size, capacity_factor) of the sweep."""
  sweep = [(e, g, 1.25) for e in (8, 32, 128) for g in group_sizes]
  return sweep + [(e, 1024, 1.0) for e in (8, 32, 128) if 1024 in group_sizes]


def _shape(row):
  return row["experts"], row["group_size"], row["capacity_factor"]


def merge(old_rows, new_rows):
  """old_rows with the shapes that new_rows measured again replaced (each
  shape's rows are its dense re-measurement and then its variants)."""
  blocks, block = [], []
  for row in old_rows:
    if row["variant"] == "dense" and block:
      blocks.append(block)
      block = []
    block.append(row)
  blocks.append(block)
  remeasured = {_shape(r) for r in new_rows if r["variant"] != "dense"}
  kept = [b for b in blocks
          if not {_shape(r) for r in b[1:]} & remeasured]
  return [r for b in kept for r in b] + new_rows


def measure(variant, experts, group_size, capacity_factor, steps, warmup):
  """Runs in a child process: builds the model, times training steps."""
  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top
  from mesh_tensorflow.transformer import moe  # pylint: disable=g-import-not-at-top
  from mesh_tensorflow.transformer import transformer  # pylint: disable=g-import-not-at-top
  from mesh_tensorflow.transformer import transformer_layers  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch import layers  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import step  # pylint: disable=g-import-not-at-top

  tf.disable_eager_execution()
  gin.parse_config_files_and_bindings(["models/defaults.gin"], [
      "d_model = %d" % D_MODEL, "d_ff = %d" % D_FF, "num_heads = %d" % NUM_HEADS,
      "d_kv = %d" % D_KV, "num_layers = %d" % LAYERS, "dropout_rate = 0.0"])
  sparse = {
      "dense": lambda: transformer_layers.DenseReluDense(hidden_size=D_FF),
      "switch_einsum": lambda: layers.SwitchFeedForward(
          num_experts=experts, hidden_size=D_FF, group_size=group_size,
          capacity_factor_train=capacity_factor, dispatch_mode="einsum"),
      "switch_index": lambda: layers.SwitchFeedForward(
          num_experts=experts, hidden_size=D_FF, group_size=group_size,
          capacity_factor_train=capacity_factor, dispatch_mode="index"),
      "switch_dropless": lambda: layers.SwitchFeedForward(
          num_experts=experts, hidden_size=D_FF, group_size=group_size,
          dispatch_mode="dropless"),
      "mtf_moe1d": lambda: moe.MoE1D(
          num_experts=experts, hidden_size=D_FF, group_size=group_size,
          capacity_factor_train=capacity_factor, moe_gating="switch"),
  }[variant]
  dense = lambda: transformer_layers.DenseReluDense(hidden_size=D_FF)
  attention = lambda: transformer_layers.SelfAttention(num_heads=NUM_HEADS,
                                                       key_value_size=D_KV)
  stack = transformer.LayerStack(
      [attention(), dense(), attention(), sparse()] * (LAYERS // 2))
  model = transformer.Unitransformer(
      layer_stack=stack, d_model=D_MODEL, input_vocab_size=VOCAB,
      output_vocab_size=VOCAB, autoregressive=True, max_length=LENGTH,
      layout="", mesh_shape="")  # MoE1D reads them

  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(0)
    tokens = tf.placeholder(tf.int32, [BATCH, LENGTH])
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    dims = [mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)]
    targets = mtf.import_tf_tensor(mesh, tokens, dims)
    # MoE1D's switch gating needs a sequence id (it crashes without one).
    _, loss = model.call_simple(
        inputs=mtf.shift(targets, offset=1, dim=dims[1], wrap=False),
        targets=targets, compute_loss=True,
        sequence_id=mtf.ones(mesh, dims, tf.int32))
    variables, grads = step.gradients(loss)
    update_ops = mtf.optimize.AdafactorOptimizer().apply_grads(grads,
                                                               variables)
    lowering = mesh_lib.lower(mtf_graph, mesh, autostack=True)
    train_op = tf.group([lowering.lowered_operation(op) for op in update_ops])
    # The same forward and backward pass without the optimizer's update, so
    # that the update's cost (it grows with the expert parameters) shows
    # apart from the routing's. It fetches one element of each gradient:
    # grappler prunes work whose outputs only feed control dependencies.
    fwd_bwd_op = tf.add_n([
        tf.reshape(lowering.export_to_tf_tensor(g), [-1])[0] for g in grads])
    init = [tf.global_variables_initializer(),
            lowering.copy_masters_to_slices()]
    num_params = sum(v.size for v in mtf_graph.trainable_variables)
  feed = {tokens: np.random.RandomState(0).randint(
      1, VOCAB, (BATCH, LENGTH)).astype(np.int32)}
  times = {train_op: [], fwd_bwd_op: []}
  with tf.Session(graph=graph) as sess:
    for op in init:
      sess.run(op)
    for i in range(warmup + steps):
      for op, op_times in times.items():  # interleaved: drift hits both
        start = time.perf_counter()
        sess.run(op, feed)
        if i >= warmup:
          op_times.append(time.perf_counter() - start)
  step_time = statistics.median(times[train_op])
  return {
      "variant": variant, "experts": experts, "group_size": group_size,
      "capacity_factor": capacity_factor, "step_s": step_time,
      "fwd_bwd_s": statistics.median(times[fwd_bwd_op]),
      "tokens_per_s": BATCH * LENGTH / step_time,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "params": num_params,
  }


def run_child(variant, experts, group_size, capacity_factor, args):
  command = [sys.executable, os.path.abspath(__file__), "--child",
             json.dumps([variant, experts, group_size, capacity_factor]),
             "--steps", str(args.steps), "--warmup", str(args.warmup)]
  result = subprocess.run(command, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  if result.returncode:
    raise RuntimeError("%s failed:\n%s" % (command, result.stderr[-3000:]))
  return json.loads(result.stdout.strip().splitlines()[-1])


def plot(rows, path):
  """Time relative to dense: full step (top), without the update (bottom)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  sweep = [r for r in rows if r["variant"] != "dense"
           and r["capacity_factor"] == 1.25]
  fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharey=True, sharex=True)
  panels = (("vs_dense", "training step"),
            ("fwd_bwd_vs_dense", "forward + backward, no update"))
  for (key, what), row_axes in zip(panels, axes):
    for ax, group_size in zip(row_axes, (256, 1024, 4096)):
      for variant, marker in zip(VARIANTS, "os^D"):
        points = sorted((r["experts"], r[key]) for r in sweep
                        if r["variant"] == variant
                        and r["group_size"] == group_size)
        ax.plot([p[0] for p in points], [p[1] for p in points],
                marker=marker, label=variant)
      ax.axhline(1.0, color="gray", lw=0.8, ls=":")
      ax.axhline(1.10, color="red", lw=0.8, ls="--", label="target 1.10x")
      ax.set_xscale("log", base=2)
      ax.set_title("%s, group size %d, cf 1.25" % (what, group_size),
                   fontsize=10)
    row_axes[0].set_ylabel("time / dense model's time")
  for ax in axes[1]:
    ax.set_xlabel("experts")
  axes[0][0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="benchmarks/results")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--group_sizes", default="256,1024,4096",
                      help="comma-separated group sizes to measure")
  parser.add_argument("--merge", action="store_true",
                      help="replace only the measured shapes' rows of the "
                           "existing results.json")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(*json.loads(args.child), steps=args.steps,
                             warmup=args.warmup)))
    return
  os.makedirs(args.out, exist_ok=True)
  rows = []
  sweep = shapes([int(g) for g in args.group_sizes.split(",")])
  for i, (experts, group_size, factor) in enumerate(sweep):
    dense = run_child("dense", 0, 0, 0, args)
    rows.append(dense)
    for variant in VARIANTS:
      row = run_child(variant, experts, group_size, factor, args)
      row["vs_dense"] = row["step_s"] / dense["step_s"]
      row["fwd_bwd_vs_dense"] = row["fwd_bwd_s"] / dense["fwd_bwd_s"]
      rows.append(row)
      print("[%d/%d] %-15s experts %3d group %4d cf %.2f: %.3f s/step "
            "(%.2fx dense; without the update %.2fx)  %.0f tokens/s  "
            "peak %.0f MB"
            % (i + 1, len(sweep), variant, experts, group_size, factor,
               row["step_s"], row["vs_dense"], row["fwd_bwd_vs_dense"],
               row["tokens_per_s"],
               row["peak_rss_mb"]), flush=True)
  results_json = os.path.join(args.out, "results.json")
  if args.merge and os.path.exists(results_json):
    with open(results_json) as f:
      rows = merge(json.load(f), rows)
  with open(results_json, "w") as f:
    json.dump(rows, f, indent=1)
  with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
    writer.writeheader()
    writer.writerows(rows)
  plot(rows, os.path.join(args.out, "results.png"))


if __name__ == "__main__":
  main()
