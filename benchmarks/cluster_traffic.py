r"""Training across TensorFlow server processes on this machine: steps/s,
and the bytes a step sends between processes against the planner's.

For the main job's model (models/switch_tiny.gin, its batch and lengths)
under data-parallel and expert+data-parallel layouts of 2 and 4 mesh
positions, runs the training step in this process (positions on its CPU)
and across 2 and 4 local TensorFlow servers
(`mtf_switch.training.local_servers`, one op thread each, positions in
blocks over them), in rounds that visit every setting once, so that drift
hits them alike.  Each measurement: --warmup steps, then --steps timed
steps on one fixed batch of random tokens (fed, as the main job feeds its
batches), then one traced step whose step statistics give the bytes
received by one process from another (`cluster.cross_task_bytes`).  Beside
them, the planner's all-to-all and all-reduce bytes of all cores together
(`mtf_switch.planning.plan`, same model, mesh and batch, float32): a
process per mesh position sends all of those between processes.

  python benchmarks/cluster_traffic.py --out benchmarks/results

writes cluster_traffic.{json,csv,md,png}.
"""
import argparse
import collections
import csv
import json
import os
import statistics
import sys
import time

from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import gin
import numpy as np
import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch import models
from mtf_switch.planning import plan
from mtf_switch.training import checkpoints
from mtf_switch.training import cluster
from mtf_switch.training import data
from mtf_switch.training import local_servers
from mtf_switch.training import loop
from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import step as step_lib
from mtf_switch.training import train

MODEL = "models/switch_tiny.gin"
Shape = collections.namedtuple(
    "Shape", ["batch_size", "input_length", "target_length", "vocab_size"])
# (name, mesh shape, layout, process counts)
SETTINGS = [
    ("one device", "", "", (1,)),
    ("data", "batch:2", "batch:batch", (1, 2)),
    ("expert+data", "batch:2", "batch:batch;experts:batch", (1, 2)),
    ("data", "batch:4", "batch:batch", (1, 2, 4)),
    ("expert+data", "batch:4", "batch:batch;experts:batch", (1, 2, 4)),
]


def _parse_model():
  gin.clear_config()
  cli.parse_files([MODEL])


def _step_graph(mesh_shape, layout, shape, devices):
  _parse_model()
  model = models.make_model(shape.vocab_size, mesh_shape, layout)
  return step_lib.build_step_graph(
      model, shape.batch_size, shape.input_length, shape.target_length,
      mesh_shape, layout, mesh_devices=devices)


def planned_bytes(mesh_shape, layout, shape):
  """(all-to-all, all-reduce) bytes of all cores of a step, planned."""
  _parse_model()
  with tf.Graph().as_default():
    p = plan.plan(shape.batch_size, shape.input_length, shape.target_length,
                  shape.vocab_size, mesh_shape, layout, tf.float32)
  return p.all_to_all_bytes * p.cores, p.allreduce_bytes * p.cores


def measure(mesh_shape, layout, processes, shape, warmup, steps):
  """(steps/s, bytes sent between processes in one step)."""
  mesh_size = mesh_lib.parse_mesh(mesh_shape)[0].size
  rng = np.random.RandomState(0)
  if processes == 1:
    return _time(_step_graph(mesh_shape, layout, shape, None), rng, shape,
                 warmup, steps)
  with local_servers.LocalServers(processes, threads=1) as servers:
    cluster.use(servers.cluster)
    graph = _step_graph(mesh_shape, layout, shape,
                        servers.cluster.mesh_devices(mesh_size))
    return _time(graph, rng, shape, warmup, steps)


def _time(graph, rng, shape, warmup, steps):
  feed = {graph.inputs: rng.randint(
              2, shape.vocab_size, (shape.batch_size, shape.input_length)),
          graph.targets: rng.randint(
              2, shape.vocab_size, (shape.batch_size, shape.target_length))}
  fetches = loop.step_fetches(graph, all_values=False)
  sess, _ = checkpoints.start_session(graph, None)
  with sess:
    for _ in range(warmup):
      sess.run(fetches, feed)
    start = time.perf_counter()
    for _ in range(steps):
      sess.run(fetches, feed)
    rate = steps / (time.perf_counter() - start)
    metadata = tf.RunMetadata()
    sess.run(fetches, feed, options=tf.RunOptions(
        trace_level=tf.RunOptions.FULL_TRACE), run_metadata=metadata)
  return rate, cluster.cross_task_bytes(metadata)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  defaults = train.make_parser().parse_args([])
  shape = Shape(defaults.batch_size, defaults.input_length,
                defaults.target_length, data.vocab_size(defaults.task))
  runs = [(name, mesh, layout, p) for name, mesh, layout, counts in SETTINGS
          for p in counts]
  rates = {run: [] for run in runs}
  sent = {}
  total = args.rounds * len(runs)
  for r in range(args.rounds):
    for i, run in enumerate(runs):
      name, mesh, layout, processes = run
      rate, sent[run] = measure(mesh, layout, processes, shape, args.warmup,
                                args.steps)
      rates[run].append(rate)
      print("[%d/%d] %s %s, %d process(es): %.2f steps/s, %d bytes between "
            "processes" % (r * len(runs) + i + 1, total, name,
                           mesh or "-", processes, rate, sent[run]),
            flush=True)
  rows = []
  for run in runs:
    name, mesh, layout, processes = run
    all_to_all, allreduce = planned_bytes(mesh, layout, shape)
    rows.append(dict(
        layout=name, mesh=mesh or "-",
        positions=mesh_lib.parse_mesh(mesh)[0].size, processes=processes,
        steps_per_s=round(statistics.mean(rates[run]), 2),
        runs=" ".join("%.2f" % x for x in rates[run]),
        measured_bytes=sent[run],
        planned_all_to_all_bytes=int(all_to_all),
        planned_allreduce_bytes=int(allreduce)))
  write(rows, shape, args)


def write(rows, shape, args):
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "cluster_traffic")
  with open(path + ".json", "w") as f:
    json.dump({"date": time.strftime("%Y-%m-%d"), "model": MODEL,
               "shape": shape._asdict(), "rounds": args.rounds,
               "steps": args.steps, "rows": rows}, f, indent=1)
  with open(path + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  kib = lambda b: "%.1f" % (b / 1024.0)  # noqa: E731
  with open(path + ".md", "w") as f:
    f.write(
        "# A training step across TensorFlow server processes (%s)\n\n"
        "%s, batch %d x (inputs %d, targets %d), float32, on this 2-core "
        "machine; each server has one op thread.  steps/s: mean of %d "
        "rounds of %d timed steps.  Sent: KiB received by one process from "
        "another in a traced step; planned: the planner's all-to-all + "
        "all-reduce KiB of all cores (sent between processes when each "
        "position has a process of its own; with fewer processes, some of "
        "it stays inside one).\n\n"
        "| layout | mesh | processes | steps/s | each round | sent KiB | "
        "planned KiB (all-to-all + all-reduce) | sent / planned |\n"
        "|---|---|---|---|---|---|---|---|\n" % (
            time.strftime("%Y-%m-%d"), MODEL, shape.batch_size,
            shape.input_length, shape.target_length,
            args.rounds, args.steps))
    for row in rows:
      planned = (row["planned_all_to_all_bytes"] +
                 row["planned_allreduce_bytes"])
      f.write("| %s | %s | %d | %.2f | %s | %s | %s (%s + %s) | %s |\n" % (
          row["layout"], row["mesh"], row["processes"], row["steps_per_s"],
          row["runs"], kib(row["measured_bytes"]), kib(planned),
          kib(row["planned_all_to_all_bytes"]),
          kib(row["planned_allreduce_bytes"]),
          "%.2f" % (row["measured_bytes"] / planned)
          if planned and row["processes"] == row["positions"] else "-"))
  _plot(rows, path + ".png")
  with open(path + ".md") as f:
    print(f.read())


def _plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  labels = ["%s %s\n%d proc." % (r["layout"], r["mesh"], r["processes"])
            for r in rows]
  x = np.arange(len(rows))
  left.bar(x, [r["steps_per_s"] for r in rows], color="tab:blue")
  left.set_xticks(x)
  left.set_xticklabels(labels, fontsize=7, rotation=60, ha="right")
  left.set_ylabel("steps/s")
  left.set_title("training steps per second")
  split = [r for r in rows if r["processes"] > 1]
  xs = np.arange(len(split))
  right.bar(xs - 0.2, [r["measured_bytes"] / 1024.0 for r in split], 0.4,
            label="sent between processes (measured)")
  right.bar(xs + 0.2, [(r["planned_all_to_all_bytes"] +
                        r["planned_allreduce_bytes"]) / 1024.0
                       for r in split], 0.4,
            label="planner: all-to-all + all-reduce, all cores")
  right.set_xticks(xs)
  right.set_xticklabels(["%s %s\n%d proc." % (r["layout"], r["mesh"],
                                               r["processes"])
                         for r in split], fontsize=7, rotation=60,
                        ha="right")
  right.set_ylabel("KiB per step")
  right.set_title("bytes a step sends")
  right.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  sys.exit(main())
