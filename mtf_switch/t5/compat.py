"""Makes mesh-tensorflow 0.1.21 work on TensorFlow 2.15 and Python 3.

mesh_tensorflow/tpu_variables.py calls
`tensorflow.python.framework.ops.register_tensor_conversion_function`, which
TensorFlow 2.13 moved to `tensor_conversion_registry`.  The installed import
hook (`_mtf_switch_import_hook`, run at start-up by a .pth file) restores
the name at mesh_tensorflow's first import, whatever imports it; `apply`
does the same when mtf_switch is imported, for an interpreter that skipped
the hook (`python -S`, or the source tree on PYTHONPATH without an
install).  This module is where mtf_switch first imports TensorFlow,
without the CUDA plugins' E lines on machines with no GPU
(`mtf_switch.t5.quiet`), so `mtf_switch/__init__.py` imports it first.

`decode_to_text` mends mesh-tensorflow's decoding off TPU on Python 3 (the
T5 binary's `infer.gin` and `MtfModel.predict`): there the graph already
turns the decoded ids into text (`decode_tf`), `utils.decode` passes those
bytes through, and `write_lines_to_file` writes their repr, each line
`b'...'`.

`one_line_each` keeps those files one line per item once decodes are text:
mesh-tensorflow's `write_lines_to_file` replaces "\n" with a space, but a
decode of a barely trained model may hold "\r" or another character at
which readers break lines (Python's universal newlines, `str.splitlines`),
and then a predictions file no longer lines up with its inputs.
"""
import functools
import re

import _mtf_switch_import_hook

from mtf_switch.t5 import quiet

# Before `decode_to_text` imports mesh_tensorflow.transformer.utils, whose
# import of pkg_resources warns.
quiet.ignore_known_warnings()
with quiet.native_lines_dropped(quiet.CUDA_PROBE_LINES):
  # mtf_switch's first TensorFlow import.
  from tensorflow.python.framework import ops  # noqa: F401


def apply():
  """Restores `ops.register_tensor_conversion_function` if it is missing."""
  _mtf_switch_import_hook.restore_register_tensor_conversion_function()


def _as_text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else value


# Where `str.splitlines` breaks a line; open() in text mode reads "\r" as one.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def decode_to_text():
  """Makes `mesh_tensorflow.transformer.utils.decode` yield str, not bytes.

  Idempotent; imports mesh_tensorflow, so call it after `apply`.
  """
  # pylint: disable=g-import-not-at-top
  from mesh_tensorflow.transformer import utils
  if getattr(utils.decode, "yields_text", False):
    return
  decode = utils.decode

  @functools.wraps(decode)
  def decode_text(*args, **kwargs):
    for value in decode(*args, **kwargs):
      yield _as_text(value)

  decode_text.yields_text = True
  utils.decode = decode_text


def one_line_each():
  """Makes `mesh_tensorflow.transformer.utils.write_lines_to_file` write
  each item on one line, every line break inside it a space.

  Idempotent; imports mesh_tensorflow, so call it after `apply`.
  """
  # pylint: disable=g-import-not-at-top
  from mesh_tensorflow.transformer import utils
  if getattr(utils.write_lines_to_file, "one_line_each", False):
    return
  write_lines_to_file = utils.write_lines_to_file

  @functools.wraps(write_lines_to_file)
  def write_one_line_each(lines, filename):
    write_lines_to_file(
        [_LINE_BREAKS.sub(" ", str(line)) for line in lines], filename)

  write_one_line_each.one_line_each = True
  utils.write_lines_to_file = write_one_line_each


apply()
