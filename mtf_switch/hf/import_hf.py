r"""Imports a HuggingFace SwitchTransformers dir as an mtf_switch checkpoint.

  python -m mtf_switch.hf.import_hf --hf_dir switch-base-8 --out runs/base8

writes out/model.ckpt-0 and out/model.gin, the gin file that rebuilds the
model; fine-tune from it with the main job (`--init_checkpoint out
--gin_file out/model.gin`) or T5's binary (`utils.run.init_checkpoint`).
Reads model.safetensors, pytorch_model.bin and their sharded forms; a
directory that is not a SwitchTransformers checkpoint, a missing file or a
weight of the wrong shape is refused by name, with nothing written.
"""
from mtf_switch.t5 import compat  # noqa: F401  (before mesh_tensorflow)

import tensorflow.compat.v1 as tf

from mtf_switch import cli
from mtf_switch.hf import convert


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--hf_dir", required=True)
  parser.add_argument("--out", required=True, help="new model dir")
  args = parser.parse_args(argv)
  tf.disable_eager_execution()
  # A bad model, checkpoint or directory, named; nothing is written then.
  with cli.refusals(parser):
    gin_path = convert.import_(args.hf_dir, args.out)
  print("wrote %s/model.ckpt-0 and %s" % (args.out, gin_path))


if __name__ == "__main__":
  main()
