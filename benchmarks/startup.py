r"""Interpreter start-up with and without mtf_switch installed.

The package installs a .pth file that runs `_mtf_switch_import_hook` in
every interpreter of its environment (it makes mesh-tensorflow importable
in any import order). This measures what that costs: `python -c pass` and
`python -c "import numpy"` in two fresh virtual environments that differ
only in the installed wheel, both seeing the pinned stack through a path
line to this venv's site-packages, runs interleaved (A, B, A, B, ...) so
that the machine's drift hits both alike.

  python benchmarks/startup.py --out benchmarks/results

writes startup.json and startup.md (median and interquartile range, ms).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"python -c pass": "pass",
            "python -c \"import numpy\"": "import numpy"}


def fresh_venv(path, wheel=None):
  """A venv at `path` seeing the pinned stack; with `wheel` installed."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", path],
                 check=True)
  python = os.path.join(path, "bin", "python")
  purelib = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()"
       "['purelib'])"], check=True, capture_output=True,
      text=True).stdout.strip()
  with open(os.path.join(purelib, "pinned_stack.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  if wheel:
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps",
                    "--ignore-installed", wheel], check=True)
  return python


def time_ms(python, code):
  start = time.perf_counter()
  subprocess.run([python, "-c", code], check=True)
  return 1000 * (time.perf_counter() - start)


def summary(times):
  quartiles = statistics.quantiles(times, n=4)
  return {"median_ms": round(statistics.median(times), 2),
          "iqr_ms": round(quartiles[2] - quartiles[0], 2)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks",
                                                    "results"))
  parser.add_argument("--repeats", type=int, default=40)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "--no-build-isolation", "-q", "-w", tmp, REPO],
                   check=True)
    wheel, = glob.glob(os.path.join(tmp, "mtf_switch-*.whl"))
    pythons = {"without": fresh_venv(os.path.join(tmp, "without")),
               "with": fresh_venv(os.path.join(tmp, "with"), wheel)}
    times = {(c, e): [] for c in COMMANDS for e in pythons}
    for i in range(args.repeats):
      for command, code in COMMANDS.items():
        for env, python in pythons.items():
          times[command, env].append(time_ms(python, code))
      print("\rrun %d/%d" % (i + 1, args.repeats), end="", flush=True)
    print()
  rows = [dict(command=c, installed=e, **summary(t))
          for (c, e), t in times.items()]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "startup.json"), "w") as f:
    json.dump(rows, f, indent=1)
  lines = ["| command | mtf_switch installed | median (ms) | IQR (ms) |",
           "|---|---|---|---|"]
  lines += ["| `%s` | %s | %.1f | %.1f |" % (
      r["command"], r["installed"], r["median_ms"], r["iqr_ms"])
            for r in rows]
  with open(os.path.join(args.out, "startup.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
