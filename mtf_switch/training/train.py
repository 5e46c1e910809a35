r"""The main job: trains one model, printing its loss and routing metrics.

The model comes from gin (default `models/switch_tiny.gin`), the mesh from
--mesh_shape and --layout (default: one device), the data from a seqio task
(default: T5's span corruption on the offline default corpus,
`mtf_switch.corpora.default_corpus`).  It prints
progress and per-layer routing metrics, writes TensorBoard summaries and
checkpoints to --model_dir, resumes from the last checkpoint there, and ends
with the validation split's negative log perplexity (and, with --metrics,
the task's own metrics on greedy decodes).  --init_checkpoint starts a new
run from another run's weights: fine-tuning.  --upcycle_from starts the gin
Switch model from a dense model's checkpoint, each expert a copy of the
dense FFN it replaces (sparse upcycling).  --distill_from trains the gin
model's dense twin, taught by the gin model restored from that checkpoint
(Section 4.2).

  python -m mtf_switch.training.train --model_dir /tmp/switch_tiny --steps 300
"""
import functools
import sys

from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch import distillation
from mtf_switch import guard
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import cluster
from mtf_switch.training import data
from mtf_switch.training import decode
from mtf_switch.training import loop
from mtf_switch.training import mesh as mesh_lib
from mtf_switch.training import step


def make_parser():
  """The main job's flags and their defaults."""
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", default="runs/switch_tiny",
                      help="checkpoints and TensorBoard summaries; an "
                           "existing one is resumed")
  cli.add_flags(parser, default_files=["models/switch_tiny.gin"])
  parser.add_argument("--task", default="mtf_switch_default_span_corruption")
  parser.add_argument("--steps", type=cli.positive_int, default=300,
                      help="total steps, counting those of a resumed run")
  # Sizes of a step: checked by the step graph (step.check_shape).
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--input_length", type=int, default=64)
  parser.add_argument("--target_length", type=int, default=16)
  parser.add_argument("--learning_rate", type=cli.positive_float,
                      default=1e-2)
  # One device: on this CPU two mesh positions gain nothing, and a mesh
  # whose layout splits only the experts computes all else on each position
  # (mtf_switch_plan reports a layout's repeated work).
  parser.add_argument("--mesh_shape", default="",
                      help="mesh-tensorflow mesh shape, e.g. batch:2 "
                           "(default: one device)")
  parser.add_argument("--layout", default="",
                      help="layout rules, e.g. batch:batch;experts:batch")
  parser.add_argument("--mesh_devices", default="",
                      help="a device per mesh position, e.g. gpu:0,gpu:1 "
                           "(cpu:0,cpu:1,... makes virtual CPU devices); "
                           "default: every slice on the default device")
  cluster.add_flags(parser)
  parser.add_argument("--log_every", type=cli.positive_int, default=25)
  parser.add_argument("--save_every", type=cli.positive_int, default=100)
  parser.add_argument("--init_checkpoint", default=None,
                      help="model dir or checkpoint whose weights start a "
                           "new run (fine-tuning; its vocabulary must be "
                           "the task's)")
  parser.add_argument("--upcycle_from", default=None,
                      help="model dir or checkpoint of a dense model that "
                           "this Switch model starts from: every expert a "
                           "copy of the dense FFN it replaces, the routers "
                           "new (sparse upcycling)")
  parser.add_argument("--distill_from", default=None,
                      help="model dir or checkpoint of the gin model (a "
                           "Switch teacher); trains its dense twin by "
                           "distillation")
  parser.add_argument("--distill_fraction", type=float, default=None,
                      help="weight of the teacher's probabilities in the "
                           "loss, with --distill_from (default: the "
                           "paper's 0.25)")
  parser.add_argument("--skip_nonfinite_steps", type=cli.non_negative_int,
                      default=0, metavar="N",
                      help="skip a step whose gradients are not finite "
                           "(no update; counted in the log and TensorBoard) "
                           "instead of stopping, up to N in a row; 0 stops "
                           "at the first")
  parser.add_argument("--metrics", action="store_true",
                      help="at the end, decode the validation split and "
                           "print the task's metrics")
  parser.add_argument("--metric_batches", type=cli.positive_int,
                      default=None,
                      help="decode at most this many batches for --metrics")
  return parser


def main(argv=None):
  parser = make_parser()
  args = parser.parse_args(argv)
  starts = [flag for flag in ("init_checkpoint", "upcycle_from",
                               "distill_from") if getattr(args, flag)]
  if len(starts) > 1:
    parser.error("give one of --init_checkpoint (fine-tuning), "
                 "--upcycle_from (sparse upcycling) and --distill_from "
                 "(distillation), not %s" % " and ".join(
                     "--" + flag for flag in starts))
  # A flag that means nothing without another is refused, not ignored.
  if args.distill_fraction is not None and not args.distill_from:
    parser.error("--distill_fraction %s weighs a teacher: give "
                 "--distill_from too, or leave it out" % args.distill_fraction)
  if args.metric_batches is not None and not args.metrics:
    parser.error("--metric_batches %d limits the decodes of --metrics: give "
                 "--metrics too, or leave it out" % args.metric_batches)
  if args.cluster and args.mesh_devices:
    parser.error("give --cluster (the mesh on its tasks) or --mesh_devices "
                 "(on this machine's devices), not both")
  try:
    with cli.refusals(parser):
      job, student, run = _set_up(parser, args)
    job.train(args.steps, log_every=args.log_every,
              save_every=args.save_every,
              max_skips_in_a_row=args.skip_nonfinite_steps)
    print("validation neg. log perplexity after %d steps: %.4f"
          % (args.steps, loop.evaluate_task(job.model, args.model_dir,
                                            **run)))
  except (checkpoints.NonFiniteError, cluster.TaskLostError) as e:
    sys.exit("training stopped: %s" % e)
  if args.metrics:
    run.pop("task_name")
    scores = decode.task_metrics(student, args.model_dir, args.task,
                                 max_batches=args.metric_batches, **run)
    print("validation metrics after %d steps: %s" % (args.steps, ", ".join(
        "%s %.4g" % kv for kv in sorted(scores.items()))))


def _set_up(parser, args):
  """Everything before the first training step: checks, the model, the
  evaluation of a fresh run and the training run, started.

  Returns:
    (loop.TaskTraining, the model whose decodes --metrics scores, the
    run's keyword arguments for loop.evaluate_task).

  Raises:
    ValueError: naming a bad value (the library's checks; the caller
      refuses it as argparse does, `cli.refusals`).
  """
  mesh_shape, _ = mesh_lib.parse_mesh(args.mesh_shape, args.layout)
  with cli.refusals(parser, "--mesh_devices=%s" % args.mesh_devices):
    mesh_devices = mesh_lib.parse_devices(args.mesh_devices)
    if mesh_devices:
      mesh_lib.check_devices(mesh_devices, args.mesh_shape)
  with cli.refusals(parser, args.cluster and "--cluster %s" % args.cluster):
    mesh_devices = (cluster.mesh_devices(args.cluster, mesh_shape,
                                         args.cluster_device)
                    or mesh_devices)
  step.check_shape(args.batch_size, args.input_length, args.target_length)
  tf.disable_eager_execution()
  vocab_size = data.vocab_size(args.task)
  gin_files = cli.parse(args)
  model = student = models.make_model(vocab_size, args.mesh_shape,
                                     args.layout)
  if args.distill_from:
    with cli.refusals(parser, "--distill_fraction %s"
                      % args.distill_fraction):
      model = distillation.Distillation(model, **(
          {} if args.distill_fraction is None
          else {"fraction_soft": args.distill_fraction}))
    student = model.student
    print("distilling %s into its dense twin (fraction soft %g)"
          % (args.distill_from, model.fraction_soft))
  init_checkpoint = args.init_checkpoint or args.distill_from
  print("training %s on %s for %d steps, mesh %s%s, in %s" % (
      " + ".join(gin_files), args.task, args.steps,
      repr(args.mesh_shape) if args.mesh_shape else "of one device",
      " on cluster %s" % args.cluster if args.cluster else "",
      args.model_dir))
  input_length, target_length = data.step_lengths(
      args.task, args.input_length, args.target_length)
  run = dict(task_name=args.task, batch_size=args.batch_size,
             input_length=input_length, target_length=target_length,
             mesh_shape=args.mesh_shape, layout=args.layout,
             mesh_devices=mesh_devices)
  if not (checkpoints.latest(args.model_dir) or init_checkpoint
          or args.upcycle_from):
    print("validation neg. log perplexity before training: %.4f"
          % loop.evaluate_task(model, None, **run))
  job = loop.TaskTraining(
      model, args.model_dir,
      make_optimizer=functools.partial(
          guard.SkipNonFiniteAdafactorOptimizer if args.skip_nonfinite_steps
          else mtf.optimize.AdafactorOptimizer,
          learning_rate=args.learning_rate),
      init_checkpoint=init_checkpoint, upcycle_from=args.upcycle_from,
      **run)
  if args.steps < job.first_step:
    parser.error("--steps %d: the run in %s is at step %d already; give the "
                 "total steps, %d or more" % (args.steps, args.model_dir,
                                              job.first_step, job.first_step))
  return job, student, run


if __name__ == "__main__":
  main()
