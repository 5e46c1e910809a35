"""Makes mesh-tensorflow 0.1.21 importable on TensorFlow 2.15.

mesh_tensorflow/tpu_variables.py calls
`tensorflow.python.framework.ops.register_tensor_conversion_function`, which
TensorFlow 2.13 moved to `tensor_conversion_registry`.  Restoring the old
name must happen before mesh_tensorflow is first imported, so
`mtf_switch/__init__.py` imports this module before anything else.  It is
also where TensorFlow is first imported, without the CUDA plugins' E lines
on machines with no GPU (`mtf_switch.quiet`).
"""
from mtf_switch import quiet

with quiet.native_lines_dropped(quiet.CUDA_PROBE_LINES):
  from tensorflow.python.framework import ops  # the first TensorFlow import
from tensorflow.python.framework import tensor_conversion_registry


def apply():
  """Restores `ops.register_tensor_conversion_function` if it is missing."""
  if not hasattr(ops, "register_tensor_conversion_function"):
    ops.register_tensor_conversion_function = (
        tensor_conversion_registry.register_tensor_conversion_function)


apply()
