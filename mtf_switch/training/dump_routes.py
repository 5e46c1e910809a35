r"""Writes where each token went: every Switch layer's expert per token.

  python -m mtf_switch.training.dump_routes --model_dir runs/switch_tiny \
      --out runs/switch_tiny/routes --examples 64

routes a task's first validation examples through a checkpoint of the main
job or of T5's binary (the gin model it was trained with: its
operative_config.gin, or the model's gin file) and writes to --out:

- `routes.tsv`: a row per token, Switch layer and choice (example, stack,
  position, token id and piece, layer, choice, expert, gate, kept);
- `specialization.png`: per layer, the token kinds (word starts, word
  pieces, numbers, punctuation, special) each expert takes beyond chance;
- `specialization.txt`: per layer and expert, its tokens and the ones most
  over-represented among them.
"""
import os

from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch import layers
from mtf_switch import models
from mtf_switch.training import checkpoints
from mtf_switch.training import data
from mtf_switch.training import routes


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", required=True,
                      help="model dir (its latest checkpoint) or checkpoint")
  cli.add_flags(parser, default_files=["models/switch_tiny.gin"])
  parser.add_argument("--out", required=True, help="folder to write to")
  parser.add_argument("--task", default="mtf_switch_default_span_corruption",
                      help="seqio task whose validation examples are routed")
  parser.add_argument("--examples", type=cli.positive_int, default=64)
  parser.add_argument("--input_length", type=cli.positive_int, default=64)
  parser.add_argument("--target_length", type=cli.positive_int, default=16)
  parser.add_argument("--model_type", default="bitransformer",
                      choices=sorted(models.MODEL_TYPES))
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  with cli.refusals(parser):
    cli.parse(args)
    checkpoint = checkpoints.resolve(args.model_dir)
    model = models.make_model(data.vocab_size(args.task),
                              model_type=args.model_type)
    lengths = data.step_lengths(args.task, args.input_length,
                                args.target_length)
    rows = routes.token_routes(model, checkpoint, args.task, args.examples,
                               *lengths)
  num_experts = max(layer.num_experts for layer in _switch_layers(model))
  found = routes.specialization(rows, num_experts)
  tf.io.gfile.makedirs(args.out)
  routes.write_tsv(rows, os.path.join(args.out, "routes.tsv"))
  routes.plot(found, os.path.join(args.out, "specialization.png"))
  lines = routes.summary_lines(found)
  with tf.io.gfile.GFile(os.path.join(args.out, "specialization.txt"),
                         "w") as f:
    f.write("\n".join(lines) + "\n")
  print("routed %d examples of %s through %s: %d rows in %s" % (
      args.examples, args.task, checkpoint, len(rows),
      os.path.join(args.out, "routes.tsv")))


def _switch_layers(model):
  stacks = [getattr(model, name, None) for name in ("encoder", "decoder")]
  stacks = [s for s in stacks if s is not None] or [model]
  return [layer for stack in stacks for layer in stack.layer_stack.layers
          if isinstance(layer, layers.SwitchFeedForward)]


if __name__ == "__main__":
  main()
