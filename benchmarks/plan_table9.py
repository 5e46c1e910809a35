r"""The capacity planner on every Table 9 model under its layout (TPU v3).

  python benchmarks/plan_table9.py --out benchmarks/results

writes plan_table9.csv and plan_table9.md: per core, the memory of a
training step with and without per-layer rematerialization, the expert
buffers, the all-to-all bytes and the step-time bound, at 2048 sequences of
512 input and 114 target tokens (and at 256 sequences on the 32-core
layouts).  About 5 minutes; each model's graph is only declared.
"""
import argparse
import csv
import os

from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import gin
import tensorflow.compat.v1 as tf

import mtf_switch  # noqa: F401  (gin search path)
from mtf_switch.planning import model_size
from mtf_switch.planning import plan

# (model gin, layout gin, batch sizes): the layouts of docs/zoo.md.
RUNS = [
    ("t5_base", "data_32", (256, 2048)),
    ("t5_large", "data_32", (256, 2048)),
    ("t5_xxl", "model_data_8x64", (2048,)),
    ("switch_base", "expert_data_32", (256, 2048)),
    ("switch_large", "expert_data_32", (256, 2048)),
    ("switch_xxl", "expert_model_data_8x64", (2048,)),
    ("switch_c", "expert_data_2048", (2048,)),
]
CHIP = "v3"  # the paper's hardware


def row(model, layout, batch_size):
  gin.clear_config()
  gin.parse_config_files_and_bindings(
      ["models/%s.gin" % model, "layouts/%s.gin" % layout], [])
  mesh_shape, rules = model_size.layout_from_gin()
  p = plan.plan(batch_size, 512, 114, 32128, mesh_shape, rules, tf.bfloat16)
  chip = plan.CHIPS[CHIP]
  hbm = chip.hbm_bytes_per_chip / chip.cores_per_chip
  weights = p.param_bytes + p.grad_bytes + p.slot_bytes
  compute, communication = plan.step_seconds(p, chip)
  gib = lambda b: round(b / plan.GIB, 2)  # noqa: E731
  return {
      "model": model, "layout": layout, "cores": p.cores,
      "batch": batch_size,
      "weights_grads_slots_gib": gib(weights),
      "activations_gib": gib(p.activation_bytes),
      "remat_activations_gib": gib(p.remat_activation_bytes),
      "expert_buffers_gib": gib(p.expert_buffer_bytes),
      "all_to_all_gib": gib(p.all_to_all_bytes),
      "step_s_compute": round(compute, 3),
      "step_s_all_to_all": round(communication, 3),
      "fits": weights + p.activation_bytes <= hbm,
      "fits_with_remat": weights + p.remat_activation_bytes <= hbm,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args()
  tf.disable_eager_execution()
  rows = []
  for model, layout, batch_sizes in RUNS:
    for batch_size in batch_sizes:
      rows.append(row(model, layout, batch_size))
      print(rows[-1], flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "plan_table9.csv"), "w") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  yes = lambda b: "yes" if b else "**no**"  # noqa: E731
  lines = [
      "| model | layout | cores | batch | weights + grads + slots | "
      "activations (remat) | expert buffers | all-to-all | step >= s "
      "(compute + all-to-all) | fits 16 GiB (remat) |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        "| %s | %s | %d | %d | %.2f | %.2f (%.2f) | %.2f | %.2f | "
        "%.3f + %.3f | %s (%s) |" % (
            r["model"], r["layout"], r["cores"], r["batch"],
            r["weights_grads_slots_gib"], r["activations_gib"],
            r["remat_activations_gib"], r["expert_buffers_gib"],
            r["all_to_all_gib"], r["step_s_compute"],
            r["step_s_all_to_all"], yes(r["fits"]),
            yes(r["fits_with_remat"])))
  with open(os.path.join(args.out, "plan_table9.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
