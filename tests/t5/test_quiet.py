"""mtf_switch.t5.quiet: no failure-like lines from correct runs, others kept."""
import logging
import subprocess
import sys

import tensorflow.compat.v1 as tf

from mtf_switch.t5 import quiet


def _stderr_of(code):
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stderr


def test_importing_mtf_switch_drops_the_cuda_probe_lines_tensorflow_prints():
  # The lines are real on this stack: TensorFlow alone prints them.
  assert quiet.CUDA_PROBE_LINES[0] in _stderr_of("import tensorflow")
  stderr = _stderr_of("import mtf_switch")
  assert not any(line in stderr for line in quiet.CUDA_PROBE_LINES), stderr


def test_other_native_stderr_lines_are_kept_in_order():
  stderr = _stderr_of(
      "import os\n"
      "from mtf_switch import quiet\n"
      "with quiet.native_lines_dropped(['drop me']):\n"
      "  os.write(2, b'first\\nplease drop me\\nlast\\n')\n"
      "os.write(2, b'after\\n')\n")
  assert stderr.endswith("first\nlast\nafter\n"), stderr


class _Records(logging.Handler):

  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def _serialization_warnings(collection):
  """Warnings TensorFlow logs exporting a graph with a (name, tensor) pair
  in `collection`, as mesh-tensorflow's scalar summaries are kept."""
  records = _Records()
  logger = logging.getLogger("tensorflow")
  logger.addHandler(records)
  try:
    with tf.Graph().as_default():
      tf.add_to_collection(collection, ("loss", tf.constant(1.0)))
      tf.train.export_meta_graph()
  finally:
    logger.removeHandler(records)
  return [m for m in records.messages if "Issue encountered" in m]


def test_the_mtf_summaries_serialization_warning_is_dropped_others_kept():
  quiet.install_log_filters()
  assert not _serialization_warnings(quiet.MTF_SUMMARIES_COLLECTION)
  kept = _serialization_warnings("some_other_collection")
  assert kept and "'tuple' object has no attribute 'name'" in kept[0]
