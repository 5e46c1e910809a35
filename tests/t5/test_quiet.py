"""mtf_switch.t5.quiet: no failure-like lines from correct runs, others kept."""
import logging
import os
import subprocess
import sys
import warnings

from absl import logging as absl_logging
import helpers  # noqa: F401  (graph mode)
import mesh_tensorflow as mtf
import tensorflow.compat.v1 as tf

from mtf_switch.t5 import quiet
from mtf_switch.training import data


def _stderr_of(code):
  # TensorFlow's C++ log at its default level: its warnings show.
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stderr


def test_importing_mtf_switch_drops_the_lines_its_imports_print():
  # The lines are real on this stack: TensorFlow alone prints the probes',
  # mesh-tensorflow's transformer the pkg_resources warning.
  stderr = _stderr_of("import tensorflow")
  assert all(line in stderr for line in quiet.CUDA_PROBE_LINES), stderr
  assert "UserWarning: pkg_resources is deprecated as an API" in _stderr_of(
      "import mesh_tensorflow.transformer.utils")
  stderr = _stderr_of("import mtf_switch")
  assert not any(line in stderr for line in quiet.CUDA_PROBE_LINES), stderr
  assert "pkg_resources" not in stderr
  assert helpers.warning_lines(stderr) == []


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


def test_the_pkg_resources_warning_is_ignored_other_user_warnings_kept():
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    quiet.ignore_known_warnings()
    warnings.warn("pkg_resources is deprecated as an API. See https://"
                  "setuptools.pypa.io/en/latest/pkg_resources.html.",
                  UserWarning)
    warnings.warn("pkg_resources is deprecated as an API.",
                  DeprecationWarning)  # another category
    warnings.warn("some other UserWarning", UserWarning)
  assert [str(w.message) for w in caught] == [
      "pkg_resources is deprecated as an API.", "some other UserWarning"]


def _logged(logger, make):
  """The messages `logger` passes to its handlers (its filters applied)
  while `make()` runs."""
  records = _Records()
  logger.addHandler(records)
  try:
    make()
  finally:
    logger.removeHandler(records)
  return records.messages


def test_the_default_initializer_note_is_dropped_for_attention_biases_only():
  quiet.install_log_filters()

  def make_variables():
    mesh = mtf.Mesh(mtf.Graph(), "mesh")
    heads = mtf.Dimension("heads", 2)
    with tf.variable_scope("encoder/SelfAttention"):
      mtf.get_variable(mesh, "relative_attention_bias", [heads])
      mtf.get_variable(mesh, "enc_dec_relative_attention_bias", [heads])
      mtf.get_variable(mesh, "router_weights", [heads])  # e.g. a layer's own
  notes = [m for m in _logged(logging.getLogger("tensorflow"), make_variables)
           if "glorot_uniform_initializer" in m]
  assert notes == ["Using default tf glorot_uniform_initializer for variable "
                   "encoder/SelfAttention/router_weights  The initialzer "
                   "will guess the input and output dimensions  based on "
                   "dimension order."]


def test_seqios_uncached_dataset_warning_is_dropped_others_kept():
  quiet.install_log_filters()

  def make_dataset():
    # What the main job's data does, which warns each time.
    data.tasks.get_task_or_mixture(
        "mtf_switch_default_span_corruption").get_dataset(
            {"inputs": 8, "targets": 8}, split="train", shuffle=True,
            use_cached=False)
    absl_logging.warning("Using an uncached %s for evaluation", "dataset")
  assert _logged(absl_logging.get_absl_logger(), make_dataset) == [
      "Using an uncached dataset for evaluation"]


def _deprecation(location, name):
  """A record as TensorFlow's `deprecation` decorator logs it."""
  return logging.makeLogRecord(dict(
      name="tensorflow", levelno=logging.WARNING,
      msg="From %s: %s (from %s) is deprecated and will be removed %s.\n"
          "Instructions for updating:\n%s",
      args=(location, name, "tensorflow.python.checkpoint."
            "checkpoint_management", "in a future version",
            "Use standard file APIs to delete files with this prefix.")))


def test_the_savers_own_deprecation_warning_is_dropped_others_kept():
  saver = "/venv/site-packages/tensorflow/python/training/saver.py:1067"
  kept = quiet.SaverDeprecationFilter().filter
  assert not kept(_deprecation(saver, "remove_checkpoint"))
  assert kept(_deprecation("/work/mine.py:3", "remove_checkpoint"))
  assert kept(_deprecation(saver, "checkpoint_exists"))
  assert kept(logging.makeLogRecord(dict(msg="remove_checkpoint", args=())))
