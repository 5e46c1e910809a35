r"""The capacity planner against this CPU: a training step's measured memory.

Trains the main job's model (models/switch_tiny.gin, float32, Adafactor,
inputs 64 / targets 16 tokens) on one device for a few steps at each batch
size, each in a process of its own with one malloc arena, and reads the
growth of the process's resident memory from just before the weights are
initialized to its peak (VmHWM, reset through /proc/self/clear_refs).
That growth holds the weights, Adafactor's slots, the gradients and
whatever the steps keep alive; `mtf_switch.planning.plan` estimates the same from the graph (no
rematerialization: the main job does not use it), for all the mesh's
devices together.  One device, not the main job's two virtual ones: on a
single CPU, TensorFlow's graph optimizer merges the identical ops that a
layout replicates on every virtual device (e.g. the embedding's one-hot),
so replicated tensors exist once, not once a device as on a TPU.  Linux
only.

  python benchmarks/plan_memory.py --out benchmarks/results

writes plan_memory.json and plan_memory.csv.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

MODEL = "models/switch_tiny.gin"
MESH_SHAPE, LAYOUT = "", ""
INPUT_LENGTH, TARGET_LENGTH, VOCAB_SIZE = 64, 16, 32128


def _status_kb(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError("no %s in /proc/self/status" % field)


def measure(batch_size, steps):
  """Trains `steps` steps in this process; returns the memory growth, bytes."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch import models  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import step  # pylint: disable=g-import-not-at-top
  tf.disable_eager_execution()
  gin.parse_config_files_and_bindings([MODEL], [])
  model = models.make_model(VOCAB_SIZE, MESH_SHAPE, LAYOUT)
  graph = step.build_step_graph(model, batch_size, INPUT_LENGTH,
                                TARGET_LENGTH, MESH_SHAPE, LAYOUT)
  rng = np.random.RandomState(0)
  # One op at a time: with ops run side by side the peak varied by 30%
  # from run to run on a 2-core machine (1.37 to 1.77 GB).
  config = tf.ConfigProto(inter_op_parallelism_threads=1)
  with tf.Session(graph=graph.graph, config=config) as sess:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets VmHWM to the current resident size
    before = _status_kb("VmRSS")
    for op in graph.init_ops:
      sess.run(op)
    for _ in range(steps):
      sess.run(graph.train_op, {
          graph.inputs: rng.randint(1, VOCAB_SIZE,
                                    (batch_size, INPUT_LENGTH)),
          graph.targets: rng.randint(1, VOCAB_SIZE,
                                     (batch_size, TARGET_LENGTH))})
    return (_status_kb("VmHWM") - before) * 1024


def estimate(batch_size):
  """The planner's bytes for all devices together (float32, no remat)."""
  import gin  # pylint: disable=g-import-not-at-top
  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch.planning import plan  # pylint: disable=g-import-not-at-top
  tf.disable_eager_execution()
  gin.parse_config_files_and_bindings([MODEL], [])
  p = plan.plan(batch_size, INPUT_LENGTH, TARGET_LENGTH, VOCAB_SIZE,
                MESH_SHAPE, LAYOUT, tf.float32)
  return {"estimate_bytes": plan.total_bytes(p) * p.cores,
          "params_grads_slots_bytes": (p.param_bytes + p.grad_bytes +
                                       p.slot_bytes) * p.cores,
          "activation_bytes": p.activation_bytes * p.cores}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="benchmarks/results")
  parser.add_argument("--batch_sizes", default="64,256,512")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child and os.environ.get("MALLOC_ARENA_MAX") != "1":
    # glibc gives threads malloc arenas of their own, and how many TF's
    # threads take varies: the peak was 1.36 GB in most runs at batch 64
    # and 1.50-1.76 GB in some (2026-12-04, this 2-core CPU). One arena:
    # 1.32-1.34 GB in five of five.  glibc reads it at start-up, hence
    # the new process.
    os.execve(sys.executable, [sys.executable] + sys.argv,
              dict(os.environ, MALLOC_ARENA_MAX="1"))
  if args.child:
    kind, batch_size = args.child.split(":")
    result = (measure(int(batch_size), args.steps) if kind == "measure"
              else estimate(int(batch_size)))
    print("RESULT " + json.dumps(result if isinstance(result, dict)
                                 else {"measured_bytes": result}))
    return
  rows = []
  for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
    row = {"batch_size": batch_size}
    for kind in ("estimate", "measure"):
      output = subprocess.run(
          [sys.executable, __file__, "--child", "%s:%d" % (kind, batch_size),
           "--steps", str(args.steps)],
          capture_output=True, text=True, check=True).stdout
      row.update(json.loads(output.split("RESULT ", 1)[1]))
    row["measured_over_estimate"] = (row["measured_bytes"] /
                                     row["estimate_bytes"])
    print("batch %4d: measured %.0f MB, planner %.0f MB (%.2fx)" % (
        batch_size, row["measured_bytes"] / 1e6, row["estimate_bytes"] / 1e6,
        row["measured_over_estimate"]), flush=True)
    rows.append(row)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "plan_memory.json"), "w") as f:
    json.dump(rows, f, indent=1)
  with open(os.path.join(args.out, "plan_memory.csv"), "w") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


if __name__ == "__main__":
  main()
