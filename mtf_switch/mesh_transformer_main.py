r"""Drop-in for T5's `t5_mesh_transformer` binary that runs mtf_switch models.

T5's own entry point imports mesh_tensorflow before it imports any
`--module_import`, too early for the TensorFlow compatibility fix that
mesh-tensorflow 0.1.21 needs on TensorFlow 2.15.  This module applies the
fix, imports mtf_switch (gin configurables and gin search path) and then
runs T5's main with exactly its flags, with one addition: a step whose
loss, router logits or gradients are not finite fails, naming the layer or
variable and the step, before its update (`mtf_switch.guard`):

  python -m mtf_switch.mesh_transformer_main \
      --model_dir=/tmp/switch --module_import=mtf_switch.tasks \
      --gin_file=dataset.gin --gin_file=models/switch_base.gin \
      --gin_file=layouts/expert_data_32.gin \
      --gin_param="MIXTURE_NAME = 'c4_v220_span_corruption'"

Installed as the console script `mtf_switch_mesh_transformer`.
"""
from mtf_switch import compat  # noqa: F401  (must precede mesh_tensorflow)

import sys  # noqa: E402

import mtf_switch  # noqa: F401,E402  (gin configurables and search path)
from t5.models import mesh_transformer_main  # noqa: E402


# Inside T5's Estimator, a non-finite loss, router logit or gradient fails
# its step before any update (mtf_switch.guard).  Given ahead of the user's
# flags, so that a later --gin_param undoes it.
GUARD_GIN_PARAMS = (
    "mtf_switch.checked.enabled = True",
    "utils.run.optimizer = @mtf_switch.CheckedAdafactorOptimizer")


def console_entry_point():
  sys.argv[1:1] = ["--gin_param=%s" % p for p in GUARD_GIN_PARAMS]
  mesh_transformer_main.console_entry_point()


if __name__ == "__main__":
  console_entry_point()
