"""Keeps a correct run's logs free of lines that read like failures.

Three sources print ERROR lines, or errors, on runs that work:

- gin logs "Path not found" at ERROR level for every search location that
  does not hold a file it then finds in another (five for
  `models/switch_tiny.gin`);
- TensorFlow 2.15's CUDA plugins, on a machine without a GPU, write
  "Unable to register cuDNN / cuFFT / cuBLAS factory" E lines to stderr from
  C++ while `tensorflow` is imported (tensorflow/tensorflow#62075);
- mesh-tensorflow keeps its scalar summaries as (name, tensor) pairs in a
  graph collection that TensorFlow cannot serialize, so every checkpoint
  an Estimator saves logs "Issue encountered when serializing
  mtf_scalar_summaries ... 'tuple' object has no attribute 'name'" (T5's
  `MtfModel`, the T5 binary).

Each filter drops exactly those lines; a gin file found nowhere still
fails naming it, and every other line (TensorFlow's warnings included)
still shows.
"""
import contextlib
import logging
import os
import sys
import tempfile

# What TensorFlow's CUDA plugins write when no GPU is there (import time).
CUDA_PROBE_LINES = ("Unable to register cuDNN factory",
                    "Unable to register cuFFT factory",
                    "Unable to register cuBLAS factory")
MTF_SUMMARIES_COLLECTION = "mtf_scalar_summaries"


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
  """Adds the gin and mesh-tensorflow filters to their loggers (once)."""
  for logger, kind in ((logging.getLogger(), GinSearchFilter),
                       (logging.getLogger("tensorflow"), MtfSummariesFilter)):
    if not any(isinstance(f, kind) for f in logger.filters):
      logger.addFilter(kind())
