r"""T5's `t5_mesh_transformer` binary with the non-finite guard on.

T5's own binary runs mtf_switch models as it is (`--module_import=
mtf_switch.tasks`; the installed import hook makes mesh-tensorflow
importable before that).  This drop-in runs T5's main with exactly its
flags and one addition: `--gin_file=guard.gin` ahead of the user's, so that
a step whose loss, router logits or gradients are not finite fails, naming
the layer or variable and the step, before its update (`mtf_switch.guard`):

  python -m mtf_switch.t5.mesh_transformer_main \
      --model_dir=/tmp/switch --module_import=mtf_switch.tasks \
      --gin_file=dataset.gin --gin_file=models/switch_base.gin \
      --gin_file=layouts/expert_data_32.gin \
      --gin_param="MIXTURE_NAME = 'c4_v220_span_corruption'"

With `--cluster host:port,...` it trains on TensorFlow servers' devices
(TF_CONFIG set for T5's Estimator, whose session runs on the first task,
the chief), under a layout that places the mesh there, e.g.
`--gin_file=layouts/cluster_expert_data_2.gin` (docs/cluster.md).

Installed as the console script `mtf_switch_mesh_transformer`.
"""
import sys

import mtf_switch  # noqa: F401  (gin configurables, search path, quiet logs)

from absl import app
from absl import flags
from t5.models import mesh_transformer_main
import tensorflow.compat.v1 as tf

from mtf_switch.training import cluster

flags.DEFINE_string(
    "cluster", "", "host:port,... of TensorFlow servers, the chief first "
    "(python -m mtf_switch.training.servers starts them): sets TF_CONFIG; "
    "a layouts/cluster_*.gin file places the mesh on their devices")


# Inside T5's Estimator, a non-finite loss, router logit or gradient fails
# its step before any update (mtf_switch.guard).  Given before the user's
# gin files, so that a later binding undoes it.
GUARD_FLAGS = ("--gin_file=guard.gin",)


def main(argv):
  if flags.FLAGS.cluster:
    try:
      cluster.use(cluster.Cluster.parse(flags.FLAGS.cluster))
    except ValueError as e:
      raise app.UsageError("--cluster %s: %s" % (flags.FLAGS.cluster, e))
  mesh_transformer_main.main(argv)


def console_entry_point():
  """As T5's console_entry_point, with the guard's flags and --cluster."""
  sys.argv[1:1] = list(GUARD_FLAGS)
  tf.disable_v2_behavior()
  tf.logging.set_verbosity(tf.logging.INFO)
  app.run(main)


if __name__ == "__main__":
  console_entry_point()
