r"""The main job end to end on its default mesh against its former one.

Runs `python -m mtf_switch.training.train --steps 300` (a fresh model dir
each time) on the default mesh (one device) and on the former default
(`batch:1,experts:2`, layout `batch:batch;experts:experts`, which computed
all but the experts on both positions), in the order new, old, old, new
times --pairs, so that drift hits both alike, and reads each run's last
progress line: steps/s averaged over the run's training.

  python benchmarks/main_job_mesh.py --out benchmarks/results

writes main_job_mesh.csv and .md.
"""
import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

MESHES = {
    "one device (default)": [],
    "batch:1,experts:2 (former default)": [
        "--mesh_shape", "batch:1,experts:2",
        "--layout", "batch:batch;experts:experts"],
}
_LAST_LINE = re.compile(r"^step (\d+)/\1  loss (\S+)  (\S+) steps/s", re.M)


def run(flags, steps):
  """(steps/s, final loss) of one main-job run in a fresh model dir."""
  with tempfile.TemporaryDirectory() as model_dir:
    out = subprocess.run(
        [sys.executable, "-m", "mtf_switch.training.train", "--model_dir",
         model_dir, "--steps", str(steps)] + flags,
        capture_output=True, text=True, check=True).stdout
  match = _LAST_LINE.search(out)
  return float(match.group(3)), float(match.group(2))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--pairs", type=int, default=1,
                      help="repeats of the order new, old, old, new")
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args(argv)
  new, old = MESHES
  rates = {name: [] for name in MESHES}
  losses = {}
  order = [new, old, old, new] * args.pairs
  for i, name in enumerate(order):
    rate, loss = run(MESHES[name], args.steps)
    rates[name].append(rate)
    losses[name] = loss
    print("[%d/%d] %s: %.2f steps/s, loss %.4f" % (
        i + 1, len(order), name, rate, loss), flush=True)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "main_job_mesh")
  rows = [{"mesh": name, "runs": " ".join("%.2f" % r for r in rates[name]),
           "mean_steps_per_s": round(statistics.mean(rates[name]), 2),
           "final_loss": losses[name]} for name in MESHES]
  with open(path + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  speedup = (statistics.mean(rates[new]) / statistics.mean(rates[old]))
  with open(path + ".md", "w") as f:
    f.write("# The main job, %d steps, on its default mesh and its former "
            "one (%s)\n\nRuns in the order new, old, old, new; steps/s "
            "from each run's last progress line.\n\n| mesh | steps/s of "
            "each run | mean | final loss |\n|---|---|---|---|\n" % (
                args.steps, time.strftime("%Y-%m-%d")))
    for row in rows:
      f.write("| %(mesh)s | %(runs)s | %(mean_steps_per_s)s | "
              "%(final_loss)s |\n" % row)
    f.write("\nThe default is %.2fx faster (means of steps/s).\n" % speedup)
  with open(path + ".md") as f:
    print(f.read())


if __name__ == "__main__":
  main()
