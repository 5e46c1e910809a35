"""Keeps a correct run's logs free of lines that read like failures.

These sources print warnings, errors or ERROR lines on runs that work:

- gin logs "Path not found" at ERROR level for every search location that
  does not hold a file it then finds in another (five for
  `models/switch_tiny.gin`);
- TensorFlow 2.15's CUDA plugins, on a machine without a GPU, write
  "Unable to register cuDNN / cuFFT / cuBLAS factory" E lines to stderr from
  C++ while `tensorflow` is imported (tensorflow/tensorflow#62075), and,
  without TensorRT, a "TF-TRT Warning: Could not find TensorRT" W line
  (mtf_switch uses no TensorRT);
- mesh-tensorflow keeps its scalar summaries as (name, tensor) pairs in a
  graph collection that TensorFlow cannot serialize, so every checkpoint
  an Estimator saves logs "Issue encountered when serializing
  mtf_scalar_summaries ... 'tuple' object has no attribute 'name'" (T5's
  `MtfModel`, the T5 binary);
- mesh-tensorflow 0.1.21 imports setuptools' `pkg_resources`
  (mesh_tensorflow/transformer/utils.py), which warns that it is
  deprecated (a UserWarning, at import);
- mesh-tensorflow's self-attention makes its `relative_attention_bias`
  without an initializer, and `mtf.get_variable` logs "Using default tf
  glorot_uniform_initializer for variable .../relative_attention_bias" for
  each, whenever a graph is built (four per graph of `switch_tiny`): that
  default is what T5 trains these biases with;
- seqio warns at every training dataset it makes that "Using an uncached
  FunctionDataset for training is not recommended": shuffling after a
  restart is what it fears, and a resumed run here skips to its place in
  the same seeded order (`mtf_switch.training.data.task_batches`);
- TensorFlow's own `Saver`, deleting a checkpoint past `max_to_keep`, calls
  its deprecated `remove_checkpoint` and logs the deprecation (every run
  of a study, which keeps one checkpoint).

Each filter drops exactly those lines; a gin file found nowhere still
fails naming it, a variable of mtf_switch's own layers made without an
initializer still warns, and every other line (TensorFlow's warnings
included) still shows.
"""
import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

from absl import logging as absl_logging

# What TensorFlow's CUDA plugins write when no GPU (and no TensorRT) is
# there (import time).
CUDA_PROBE_LINES = ("Unable to register cuDNN factory",
                    "Unable to register cuFFT factory",
                    "Unable to register cuBLAS factory",
                    "TF-TRT Warning: Could not find TensorRT")
MTF_SUMMARIES_COLLECTION = "mtf_scalar_summaries"
# setuptools' warning when mesh-tensorflow imports pkg_resources (a regex
# matched at the start of the message).
PKG_RESOURCES_WARNING = r"pkg_resources is deprecated as an API"
# mesh-tensorflow's note on a variable made without an initializer, for the
# relative attention biases of its attention layers (and their
# encoder-decoder variant).
DEFAULT_INITIALIZER_NOTE = re.compile(
    r"Using default tf glorot_uniform_initializer for variable "
    r"\S*relative_attention_bias ")
UNCACHED_DATASET_WARNING = (
    "Using an uncached FunctionDataset for training is not recommended")


class GinSearchFilter(logging.Filter):
  """Drops gin's "Path not found" lines (see the module docstring)."""

  def filter(self, record):
    return not (record.module == "resource_reader"
                and str(record.msg).startswith("Path not found"))


class MtfSummariesFilter(logging.Filter):
  """Drops TensorFlow's warning that it cannot serialize mesh-tensorflow's
  scalar-summary collection (see the module docstring); the same warning
  about any other collection still shows."""

  def filter(self, record):
    return not (str(record.msg).startswith("Issue encountered when serializing")
                and record.args
                and record.args[0] == MTF_SUMMARIES_COLLECTION)


class DefaultInitializerFilter(logging.Filter):
  """Drops mesh-tensorflow's "Using default tf glorot_uniform_initializer"
  note for the relative attention biases (see the module docstring); the
  same note for any other variable still shows."""

  def filter(self, record):
    return not DEFAULT_INITIALIZER_NOTE.match(str(record.msg))


class SaverDeprecationFilter(logging.Filter):
  """Drops TensorFlow's deprecation warning for `remove_checkpoint` when
  TensorFlow's own Saver calls it (see the module docstring); a call from
  anywhere else, and any other deprecation, still shows."""

  def filter(self, record):
    args = record.args if isinstance(record.args, tuple) else ()
    return not (str(record.msg).startswith("From %s: %s (from %s) is "
                                           "deprecated")
                and len(args) > 1 and args[1] == "remove_checkpoint"
                and "tensorflow/python/training/saver.py:" in str(args[0]))


class UncachedDatasetFilter(logging.Filter):
  """Drops seqio's warning that a training dataset is not cached (see the
  module docstring); seqio's other warnings still show."""

  def filter(self, record):
    return not str(record.msg).startswith(UNCACHED_DATASET_WARNING)


def ignore_known_warnings():
  """Ignores setuptools' pkg_resources deprecation (see the module
  docstring); call before mesh_tensorflow.transformer is imported.  Other
  warnings, and other UserWarnings, still show."""
  warnings.filterwarnings("ignore", message=PKG_RESOURCES_WARNING,
                          category=UserWarning)


@contextlib.contextmanager
def native_lines_dropped(patterns):
  """Drops the lines holding any of `patterns` from what is written to file
  descriptor 2 (native code's stderr) inside the block.

  The block's stderr goes to a temporary file; when the block ends, the
  other lines are written to stderr in their order.

  Args:
    patterns: iterable of str.

  Yields:
    None.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode("utf-8", "replace").splitlines(True)
      sys.stderr.write("".join(
          line for line in lines if not any(p in line for p in patterns)))
      sys.stderr.flush()


def install_log_filters():
  """Adds the filters above to the loggers their lines come from (once):
  gin's to the root logger, TensorFlow's and mesh-tensorflow's to
  TensorFlow's, seqio's to absl's."""
  for logger, kind in (
      (logging.getLogger(), GinSearchFilter),
      (logging.getLogger("tensorflow"), MtfSummariesFilter),
      (logging.getLogger("tensorflow"), DefaultInitializerFilter),
      (logging.getLogger("tensorflow"), SaverDeprecationFilter),
      (absl_logging.get_absl_logger(), UncachedDatasetFilter)):
    if not any(isinstance(f, kind) for f in logger.filters):
      logger.addFilter(kind())
