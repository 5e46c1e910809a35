r"""Where mtf_switch's and HuggingFace's training steps differ, op by op.

benchmarks/peer_hf.py times the two frameworks' steps side by side; this
traces them.  For each shape set and model it builds peer_hf's twins (the
same gin, HuggingFace config, batches and Adafactor), warms each up, then
traces --steps steps: TensorFlow's `FULL_TRACE` (each executed node's time,
summed by the node's op type) and `torch.profiler` (each op's self CPU
time, summed by its name).  Both sums are of op durations, which overlap
where TensorFlow runs ops side by side on the 2 cores; the untraced step's
median is beside them.

The op types fall into two groups, whatever the framework names them,
beside the steps' totals and op counts:

  matmul       matrix products (TensorFlow: Einsum, MatMul, BatchMatMulV2;
               torch: mm, bmm, addmm, baddbmm)
  elementwise  everything else that reads and writes tensors

The models run one after another in one process, so the untraced step
times are not side by side: peer_hf.py's are.

Set c (peer_hf.py: set b with every width a few numbers) keeps set b's
ops and removes most of their work, so set b minus set c is the part of a
step that grows with the widths, op type by op type.

  python benchmarks/peer_ops.py --out benchmarks/results

writes peer_ops.csv and peer_ops.md.
"""
import argparse
import collections
import csv
import os
import statistics
import time

import peer_hf  # benchmarks/ is the script's own folder

TF_MATMULS = ("Einsum", "MatMul", "BatchMatMulV2", "BatchMatMul")
TORCH_MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def group(framework, op_type):
  """"matmul" or "elementwise" for an op type of a framework."""
  matmuls = TF_MATMULS if framework == "mtf_switch" else TORCH_MATMULS
  return "matmul" if op_type in matmuls else "elementwise"


def _median_step(run_step, steps):
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    run_step()
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def trace_mtf(shapes, model, steps):
  """({op type: ms per step}, ops per step, untraced median s/step) of
  mtf_switch's step op, one device."""
  from mtf_switch.t5 import compat  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import data  # pylint: disable=g-import-not-at-top
  tf.disable_eager_execution()
  vocab_size = data.vocab_size(peer_hf.TASK)
  graph = peer_hf.mtf_twin(shapes, model, vocab_size)
  batch = peer_hf.make_batches(vocab_size)[0]
  feed = {graph.inputs: batch["inputs"], graph.targets: batch["targets"]}
  with tf.Session(graph=graph.graph) as sess:
    for op in graph.init_ops:
      sess.run(op)
    median = _median_step(lambda: sess.run(graph.train_op, feed), 3 + steps)
    micros, nodes = collections.Counter(), 0
    for _ in range(steps):
      metadata = tf.RunMetadata()
      sess.run(graph.train_op, feed,
               options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
               run_metadata=metadata)
      for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
          name = node.node_name.split(":")[0]
          try:
            op_type = graph.graph.get_operation_by_name(name).type
          except KeyError:  # TensorFlow's own (_SOURCE, feeds, fetches)
            op_type = "(runtime)"
          micros[op_type] += node.op_end_rel_micros
          nodes += 1
  return ({k: v / 1000 / steps for k, v in micros.items()}, nodes / steps,
          median)


def trace_hf(shapes, model, steps):
  """({op name: ms of self CPU time per step}, top-level ops per step,
  untraced median s/step) of HuggingFace's twin's training step."""
  import torch  # pylint: disable=g-import-not-at-top
  from mtf_switch import models  # pylint: disable=g-import-not-at-top
  from mtf_switch.training import data  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  vocab_size = data.vocab_size(peer_hf.TASK)
  peer_hf.parse_gin(shapes, model)
  config_class, config = peer_hf.hf_twin_config(models.make_model(vocab_size))
  net, optimizer = peer_hf.hf_twin(config_class, config)
  batch = {k: torch.from_numpy(v).long()
           for k, v in peer_hf.make_batches(vocab_size)[0].items()}

  def step():
    out = net(input_ids=batch["inputs"], labels=batch["targets"],
              output_router_logits=config_class == "switch")
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return out.loss.item()
  median = _median_step(step, 3 + steps)
  with torch.profiler.profile() as profile:
    for _ in range(steps):
      step()
  micros = collections.Counter()
  for event in profile.key_averages():
    micros[event.key] += event.self_cpu_time_total
  top_level = sum(1 for e in profile.events() if e.cpu_parent is None)
  return ({k: v / 1000 / steps for k, v in micros.items()},
          top_level / steps, median)


def rows(traces):
  """Table rows from {(framework, shapes, model): (ms by op type, ops,
  median)}: per framework, model and shape set, the groups' ms per step
  and each op type's, largest first."""
  result = []
  for (framework, shapes, model), (ms, ops, median) in traces.items():
    by_group = collections.Counter()
    for op_type, value in ms.items():
      by_group[group(framework, op_type)] += value
    base = dict(framework=framework, shapes=shapes, model=model)
    result.append(dict(base, what="step (untraced median)",
                       ms=round(1000 * median, 2), ops=round(ops)))
    result.append(dict(base, what="all ops", ms=round(sum(ms.values()), 2),
                       ops=round(ops)))
    for name in ("matmul", "elementwise"):
      result.append(dict(base, what=name, ms=round(by_group[name], 2),
                         ops=""))
    for op_type, value in sorted(ms.items(), key=lambda kv: -kv[1])[:8]:
      result.append(dict(base, what="op " + op_type, ms=round(value, 2),
                         ops=""))
  return result


def growth(result, full="b", shrunk="c"):
  """Per framework and model, what grows from `shrunk` to `full` widths:
  {(framework, model): {what: ms at full - ms at shrunk}} for the step,
  all ops and the two groups."""
  ms = {(r["framework"], r["model"], r["shapes"], r["what"]): r["ms"]
        for r in result}
  table = {}
  for framework, model in dict.fromkeys((r["framework"], r["model"])
                                        for r in result):
    whats = ("step (untraced median)", "all ops", "matmul", "elementwise")
    if all((framework, model, s, w) in ms
           for s in (full, shrunk) for w in whats):
      table[(framework, model)] = {
          w: round(ms[(framework, model, full, w)] -
                   ms[(framework, model, shrunk, w)], 2) for w in whats}
  return table


def write(result, out_dir, header):
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "peer_ops")
  with open(path + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(result[0]))
    writer.writeheader()
    writer.writerows(result)
  grown = growth(result)
  with open(path + ".md", "w") as f:
    f.write(header + "\n\n## What grows with the widths (set b minus set "
            "c, ms per step)\n\n| framework | model | step | all ops | "
            "matmul | elementwise |\n|---|---|---|---|---|---|\n")
    for (framework, model), values in grown.items():
      f.write("| %s | %s | %s |\n" % (framework, model, " | ".join(
          str(v) for v in values.values())))
    f.write("\n## Op time per step\n\n| framework | shapes | model | what "
            "| ms | ops |\n|---|---|---|---|---|---|\n")
    for row in result:
      f.write("| " + " | ".join(str(v) for v in row.values()) + " |\n")
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shapes", default="a,b,c")
  parser.add_argument("--models", default="switch,dense")
  parser.add_argument("--steps", type=int, default=5,
                      help="traced steps of each model")
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args(argv)
  traces = {}
  for shapes in args.shapes.split(","):
    for model in args.models.split(","):
      for framework, trace in (("mtf_switch", trace_mtf), ("hf", trace_hf)):
        print("tracing %s %s, shape set %s" % (framework, model, shapes),
              flush=True)
        traces[(framework, shapes, model)] = trace(shapes, model, args.steps)
  header = ("# mtf_switch's and HuggingFace's steps, op by op\n\n"
            "`python benchmarks/peer_ops.py` (%s): %d traced steps of each "
            "model after warm-up, one process, the models one after another "
            "(peer_hf.py's shapes, batches and Adafactor). ms: op durations "
            "summed per step (TensorFlow's ops overlap on the 2 cores; "
            "torch's are self CPU time); ops: executed TensorFlow nodes, or "
            "top-level torch ops. Load average before: %s." % (
                time.strftime("%Y-%m-%d"), args.steps, peer_hf._load()))  # pylint: disable=protected-access
  path = write(rows(traces), args.out, header)
  with open(path + ".md") as f:
    print(f.read())


if __name__ == "__main__":
  main()
