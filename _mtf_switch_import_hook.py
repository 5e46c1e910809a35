"""Makes mesh-tensorflow 0.1.21 importable on TensorFlow 2.15, in any order.

mesh_tensorflow/tpu_variables.py calls
`tensorflow.python.framework.ops.register_tensor_conversion_function`, a
name TensorFlow 2.13 moved to `tensor_conversion_registry`.  The name has
to be back before mesh_tensorflow's first import, whoever imports it: T5's
own `t5_mesh_transformer`, `import t5.models`, or a user's code that never
imports mtf_switch first.

The package installs `mtf_switch_import_hook.pth` beside this module (see
setup.py), so that every interpreter of the environment runs `install()`
at start-up: it adds a meta path finder that finds nothing and only
watches for mesh_tensorflow's first import, where it restores the name.
Start-up itself imports no TensorFlow.  A top-level module, not part of
`mtf_switch`, because importing `mtf_switch` imports TensorFlow.
"""
import sys


def restore_register_tensor_conversion_function():
  """Restores `ops.register_tensor_conversion_function` if it is missing."""
  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import ops
  from tensorflow.python.framework import tensor_conversion_registry
  if not hasattr(ops, "register_tensor_conversion_function"):
    ops.register_tensor_conversion_function = (
        tensor_conversion_registry.register_tensor_conversion_function)


class BeforeMeshTensorflow:
  """A meta path finder that restores the name as mesh_tensorflow's first
  import begins, then lets the other finders find it.

  It stays on `sys.meta_path` (removing a finder while the import system
  iterates over the list would skip the next one) and is idle once done.
  """
  done = False

  @classmethod
  def find_spec(cls, fullname, path=None, target=None):
    del path, target  # finds nothing
    if fullname == "mesh_tensorflow" and not cls.done:
      cls.done = True
      restore_register_tensor_conversion_function()
    return None


def install():
  """Puts the finder first on `sys.meta_path` (once)."""
  if BeforeMeshTensorflow not in sys.meta_path:
    sys.meta_path.insert(0, BeforeMeshTensorflow)
