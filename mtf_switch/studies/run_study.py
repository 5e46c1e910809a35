r"""Runs a study (models x seeds, see mtf_switch.studies.study) and summarizes it.

  python -m mtf_switch.studies.run_study --study studies/experts.gin \
      --results_dir docs/studies/experts

Each run trains in a child process of its own (gin and memory are
per-process), resuming from its checkpoints in --work_dir after a kill;
runs whose curves are already in --results_dir are skipped (the run that
a distilled, upcycled or continued run starts from is trained again when
its checkpoint is not in --work_dir).  After every
run the summary (summary.csv, summary.md, validation.png, routing.png) is
written again.  --quick runs any study in a few minutes (one seed, few
steps) into <work_dir>/quick, never into the results.
"""
import argparse
import os
import subprocess
import sys
import time

from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import gin
import tensorflow.compat.v1 as tf

import mtf_switch  # noqa: F401  (gin search path)
from mtf_switch import cli
from mtf_switch.studies import report
from mtf_switch.studies import study as study_lib
from mtf_switch.training import cluster
from mtf_switch.training import mesh as mesh_lib


def load_study(study_file, quick):
  """The study of a gin file (its quick copy if `quick`).

  Raises:
    ValueError: naming the file that is not found or does not parse, or
      what is wrong with the study (`study.Study`).
  """
  gin.clear_config()
  cli.parse_files([study_file])
  study = study_lib.Study()
  return study.quick() if quick else study


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--study", required=True,
                      help="study gin file, by name (studies/*.gin) or path")
  parser.add_argument("--results_dir", default=None,
                      help="curves and summary (default: docs/studies/"
                           "<study name>)")
  parser.add_argument("--work_dir", default="runs/studies",
                      help="checkpoints of unfinished runs")
  parser.add_argument("--quick", action="store_true",
                      help="one seed, 20 steps: a few minutes")
  parser.add_argument("--mesh_shape", default="",
                      help="mesh of each run, e.g. batch:2 (default: one "
                           "device)")
  parser.add_argument("--layout", default="",
                      help="layout rules, e.g. batch:batch;experts:batch")
  cluster.add_flags(parser)
  parser.add_argument("--run", help=argparse.SUPPRESS)  # MODEL:SEED (child)
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  with cli.refusals(parser, "--study %s" % args.study):
    study = load_study(args.study, args.quick)
  with cli.refusals(parser):
    mesh_shape, _ = mesh_lib.parse_mesh(args.mesh_shape, args.layout)
  with cli.refusals(parser, args.cluster and "--cluster %s" % args.cluster):
    mesh_devices = cluster.mesh_devices(args.cluster, mesh_shape,
                                       args.cluster_device)
  work_dir = os.path.join(args.work_dir, "quick" if args.quick else "",
                          study.name)
  results_dir = (os.path.join(work_dir, "results") if args.quick else
                 args.results_dir or os.path.join("docs", "studies",
                                                  study.name))
  if args.run:
    model, seed = args.run.rsplit(":", 1)
    try:
      study_lib.run(study, model, int(seed), work_dir, results_dir,
                    sys.stdout, args.mesh_shape, args.layout, mesh_devices)
    except cluster.TaskLostError as e:
      sys.exit("run %s stopped: %s" % (args.run, e))
    return
  # In this process: a run's child would fail with a traceback.
  with cli.refusals(parser, "--study %s" % args.study):
    study_lib.check_runs(study, work_dir)
  runs = study.runs()
  for i, (model, seed) in enumerate(runs):
    name = study_lib.run_name(model, seed)
    if os.path.exists(study_lib.curve_path(results_dir, model, seed)):
      print("[%d/%d] %s: done (curve in %s)" % (i + 1, len(runs), name,
                                                 results_dir), flush=True)
      continue
    source = study.sources.get(model)
    if source and not study_lib.finished_checkpoint(study, source, seed,
                                                    work_dir):
      # Its curve is in the results, its checkpoint not in this work dir
      # (another machine ran it): train it again, curve kept aside.
      print("[%d/%d] %s: training %s first, which it starts from" % (
          i + 1, len(runs), name, study_lib.run_name(source, seed)),
            flush=True)
      _run_child(args, os.path.join(work_dir, "teachers"), source, seed)
    print("[%d/%d] %s: training %d steps" % (i + 1, len(runs), name,
                                            study.steps), flush=True)
    start = time.time()
    _run_child(args, results_dir, model, seed)
    report.write(study, results_dir)
    print("[%d/%d] %s: finished in %.0f s; summary in %s"
          % (i + 1, len(runs), name, time.time() - start, results_dir),
          flush=True)
  report.write(study, results_dir)
  with open(os.path.join(results_dir, "summary.md")) as f:
    print(f.read())


def _run_child(args, results_dir, model, seed):
  """Trains one run in a child process; exits if it fails."""
  command = [sys.executable, "-m", "mtf_switch.studies.run_study", "--study",
             args.study, "--work_dir", args.work_dir, "--results_dir",
             results_dir, "--run", "%s:%d" % (model, seed)]
  if args.quick:
    command.append("--quick")
  command += ["--mesh_shape", args.mesh_shape, "--layout", args.layout,
              "--cluster", args.cluster, "--cluster_device",
              args.cluster_device]
  if subprocess.run(command).returncode:
    sys.exit("run %s failed; see its output above"
             % study_lib.run_name(model, seed))


if __name__ == "__main__":
  main()
