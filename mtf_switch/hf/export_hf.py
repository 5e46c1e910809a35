r"""Exports an mtf_switch checkpoint as a HuggingFace SwitchTransformers dir.

  python -m mtf_switch.hf.export_hf --model_dir runs/switch_tiny \
      --gin_file models/switch_tiny.gin --out /tmp/switch_tiny_hf

writes config.json and model.safetensors, which
`transformers.SwitchTransformersForConditionalGeneration.from_pretrained`
loads.  Model shapes HuggingFace's class cannot express (GEGLU experts,
top-2 routing, sparse blocks off its pattern, ...) are refused with a
message naming the setting; nothing is written to --out on failure.
"""
from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch import models
from mtf_switch.hf import convert
from mtf_switch.training import checkpoints


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", required=True,
                      help="model dir (its latest checkpoint) or checkpoint")
  cli.add_flags(parser, default_files=["models/switch_tiny.gin"])
  parser.add_argument("--out", required=True, help="new HuggingFace dir")
  parser.add_argument("--sequence_length", type=cli.positive_int,
                      default=512,
                      help="tokens per sequence for HuggingFace's fixed "
                           "expert_capacity")
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  # A bad model, checkpoint or directory, named; nothing is written then.
  with cli.refusals(parser):
    cli.parse(args)
    checkpoint = checkpoints.resolve(args.model_dir)
    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    if "shared/embedding" not in shapes:
      raise ValueError("%s has no shared/embedding: not an mtf_switch "
                       "bitransformer checkpoint" % checkpoint)
    model = models.make_bitransformer(shapes["shared/embedding"][0])
    config = convert.export(model, checkpoint, args.out, args.sequence_length)
  print("wrote %s: %d + %d blocks, %d experts, expert_capacity %d"
        % (args.out, config["num_layers"], config["num_decoder_layers"],
           config["num_experts"], config["expert_capacity"]))


if __name__ == "__main__":
  main()
