"""_mtf_switch_import_hook: mesh-tensorflow imports in any order."""
import itertools
import os
import subprocess
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Imports the three packages in the order given, then runs a Switch layer
# (the tests' helpers import mtf_switch, by then the last of the three).
_IMPORT_THEN_RUN_THE_LAYER = """
import importlib
import sys
for name in sys.argv[1:]:
  importlib.import_module(name)
sys.path.insert(0, %r)
import helpers
import numpy as np
x = np.random.RandomState(0).randn(helpers.BATCH, helpers.LENGTH,
                                   helpers.D_MODEL)
values, _ = helpers.run_layer(helpers.switch_layer(), x)
assert values["y"].shape == x.shape and np.isfinite(values["y"]).all()
print("ran")
""" % TESTS_DIR

ORDERS = list(itertools.permutations(
    ["t5.models", "mesh_tensorflow", "mtf_switch"]))


def _start(*args):
  return subprocess.Popen([sys.executable, "-c"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


@pytest.mark.slow
def test_every_import_order_works_and_the_layer_runs_after_it():
  # Two fresh interpreters at a time (one per core).
  failures = []
  for pair in (ORDERS[i:i + 2] for i in range(0, len(ORDERS), 2)):
    started = [(order, _start(_IMPORT_THEN_RUN_THE_LAYER, *order))
               for order in pair]
    for order, process in started:
      out, err = process.communicate(timeout=600)
      if process.returncode or "ran" not in out:
        failures.append((order, err[-3000:]))
  assert not failures, failures


def test_start_up_installs_the_hook_without_importing_tensorflow():
  out, err = _start(
      "import sys; "
      "print([getattr(f, '__name__', '') for f in sys.meta_path][0]); "
      "print('tensorflow' in sys.modules)").communicate(timeout=60)
  assert out.split() == ["BeforeMeshTensorflow", "False"], err


def test_the_hook_restores_the_name_at_mesh_tensorflows_first_import():
  # Without the hook (python -S skips site and its .pth files), importing
  # mesh_tensorflow first fails as the issue describes; with it, it works.
  script = ("import sys; sys.path[:] = %r; import mesh_tensorflow; "
            "print('imported')" % sys.path)
  process = subprocess.run([sys.executable, "-S", "-c", script],
                           capture_output=True, text=True, timeout=300)
  assert "register_tensor_conversion_function" in process.stderr
  out, err = _start("import mesh_tensorflow; print('imported')").communicate(
      timeout=300)
  assert "imported" in out, err[-3000:]
