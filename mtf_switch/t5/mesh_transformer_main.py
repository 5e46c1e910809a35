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

Installed as the console script `mtf_switch_mesh_transformer`.
"""
import sys

import mtf_switch  # noqa: F401  (gin configurables, search path, quiet logs)
from t5.models import mesh_transformer_main


# Inside T5's Estimator, a non-finite loss, router logit or gradient fails
# its step before any update (mtf_switch.guard).  Given before the user's
# gin files, so that a later binding undoes it.
GUARD_FLAGS = ("--gin_file=guard.gin",)


def console_entry_point():
  sys.argv[1:1] = list(GUARD_FLAGS)
  mesh_transformer_main.console_entry_point()


if __name__ == "__main__":
  console_entry_point()
