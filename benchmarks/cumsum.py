r"""Slot positions: mtf_switch's cumsum against mesh-tensorflow's, side by side.

Top-1 and top-2 routing give every token its place in its expert's queue by
an exclusive cumulative sum of the one-hot choices over the group
([groups, group_size, experts]).  mtf.cumsum computes it as a matmul with a
[group_size, group_size] triangular matrix; routing.cumsum runs tf.cumsum on
each slice.  This times both on one-hot choices of the studies' shapes (one
group of 2048 tokens) and of a pod's (groups of 4096), in turns, and checks
that they agree.

  python benchmarks/cumsum.py --out benchmarks/results

writes cumsum.csv and cumsum.md.
"""
import argparse
import csv
import os
import statistics
import time


def build(group_size, num_experts, groups):
  """(session, {implementation: lowered tf output}) for one shape."""
  import mesh_tensorflow as mtf  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch import routing  # pylint: disable=g-import-not-at-top

  tf.reset_default_graph()
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension("groups", groups),
          mtf.Dimension("group_size", group_size),
          mtf.Dimension("experts", num_experts)]
  choices = np.random.RandomState(0).randint(num_experts,
                                             size=(groups, group_size))
  one_hot = np.eye(num_experts, dtype=np.float32)[choices]
  mask = mtf.import_tf_tensor(mesh, tf.Variable(one_hot), dims)
  outputs = {"mtf.cumsum": mtf.cumsum(mask, dims[1], exclusive=True),
             "routing.cumsum": routing.cumsum(mask, dims[1], exclusive=True)}
  mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(
      mtf.convert_to_shape(""), mtf.convert_to_layout_rules(""), [""])
  lowering = mtf.Lowering(graph, {mesh: mesh_impl})
  tf_outputs = {k: lowering.export_to_tf_tensor(v) for k, v in outputs.items()}
  sess = tf.Session()
  sess.run(tf.global_variables_initializer())
  got = sess.run(tf_outputs)
  if not np.array_equal(got["mtf.cumsum"], got["routing.cumsum"]):
    raise AssertionError("the two cumsums differ at %s" % (dims,))
  return sess, tf_outputs


def time_shape(sess, tf_outputs, rounds, repeats):
  """{implementation: median seconds per call}, implementations in turns."""
  times = {name: [] for name in tf_outputs}
  for r in range(rounds + 1):  # round 0 warms up
    for name in (sorted(tf_outputs) if r % 2 else
                 sorted(tf_outputs, reverse=True)):
      start = time.perf_counter()
      for _ in range(repeats):
        sess.run(tf_outputs[name].op)
      if r:
        times[name].append((time.perf_counter() - start) / repeats)
  return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args(argv)
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_eager_execution()
  rows = []
  for groups, group_size in ((1, 2048), (4, 4096)):
    for num_experts in (8, 32, 64):
      sess, tf_outputs = build(group_size, num_experts, groups)
      median = time_shape(sess, tf_outputs, args.rounds, args.repeats)
      sess.close()
      row = {"groups": groups, "group_size": group_size,
             "experts": num_experts,
             "mtf_cumsum_ms": round(1e3 * median["mtf.cumsum"], 2),
             "routing_cumsum_ms": round(1e3 * median["routing.cumsum"], 2),
             "speedup": round(median["mtf.cumsum"]
                              / median["routing.cumsum"], 1)}
      print(row, flush=True)
      rows.append(row)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "cumsum")
  with open(path + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with open(path + ".md", "w") as f:
    f.write("Exclusive cumsum over the group of one-hot choices, median "
            "ms a call over %d rounds of %d, in turns (%s)\n\n| %s |\n|%s\n"
            % (args.rounds, args.repeats, time.strftime("%Y-%m-%d"),
               " | ".join(rows[0]), "---|" * len(rows[0])))
    for row in rows:
      f.write("| " + " | ".join(str(v) for v in row.values()) + " |\n")
  print("wrote %s.csv and .md" % path)


if __name__ == "__main__":
  main()
