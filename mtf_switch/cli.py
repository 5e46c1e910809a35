"""What mtf_switch's commands share on the command line: the --gin_file and
--gin_param flags, argparse types for counts and rates, and refusals.

A command refuses a bad value as argparse does (`parser.error`), in one
line: `<prog>: error: <what is wrong, the value, what would be right>` on
stderr and exit status 2, no traceback (`ArgumentParser`).  Values
argparse can judge alone are checked by the types below; the library's
own checks, made as a command sets up (gin files, tasks, meshes,
checkpoints, vocabularies, model shapes: each raises ValueError naming
the value), become such refusals inside `refusals`.  Errors raised once
training has started keep their tracebacks: the block ends before the
first training step.
"""
import argparse
import contextlib
import math

import gin


class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser, whose errors are one line: `<prog>: error: ...` on
  stderr, exit status 2.  (argparse's own prints its usage above that
  line; --help still shows it.)"""

  def error(self, message):
    self.exit(2, "%s: error: %s\n" % (self.prog, one_line(message)))


def add_flags(parser, default_files=None):
  """Adds --gin_file (repeatable; by name on gin's search path, or path) and
  --gin_param (repeatable binding) to an argparse parser.

  Args:
    parser: argparse.ArgumentParser.
    default_files: gin files used when no --gin_file is given; None makes
      --gin_file required.
  """
  parser.add_argument(
      "--gin_file", action="append", required=default_files is None,
      help="gin file(s), by name (e.g. models/switch_tiny.gin) or path%s"
      % ("" if default_files is None
         else " (default: %s)" % " ".join(default_files)))
  parser.add_argument(
      "--gin_param", action="append", default=[],
      help="gin binding(s), e.g. "
           "'mtf_switch.SwitchFeedForward.num_experts = 8'")
  parser.set_defaults(default_gin_files=default_files)


def parse(args):
  """Parses the files and bindings of parsed flags; returns the files.

  Raises:
    ValueError: as `parse_files`.
  """
  files = args.gin_file or args.default_gin_files
  parse_files(files, args.gin_param)
  return files


def parse_files(files, bindings=()):
  """gin.parse_config_files_and_bindings, refusing as ValueError.

  gin raises OSError for a file it does not find and SyntaxError for a
  line it cannot parse: as ValueError, with the file or binding named,
  they are refusals (`refusals`) like gin's own ValueErrors (a binding of
  an unknown configurable or parameter).

  Raises:
    ValueError: naming the gin file that is not found, or the binding or
      file line that does not parse or names nothing known.
  """
  try:
    gin.parse_config_files_and_bindings(files, bindings)
  except OSError as e:  # gin's "Unable to open file" (IOError)
    raise ValueError("%s Give a gin file by path, or by name on that "
                     "search path" % e) from e
  except SyntaxError as e:  # gin's parser, with the line it stopped at
    raise ValueError("%s In %s line %s: %s" % (
        e.msg, e.filename or "bindings string", e.lineno,
        (e.text or "").strip())) from e


def one_line(message):
  """An error message as one line: gin's "In call to configurable ..."
  context lines (which name functions by memory address) dropped, the
  other lines joined."""
  lines = [line.strip() for line in str(message).splitlines()]
  return " ".join(line for line in lines
                  if line and not line.startswith("In call to configurable"))


@contextlib.contextmanager
def refusals(parser, about=None):
  """Ends the command as `parser.error` does if the block raises
  ValueError: the library's way of refusing a value as a command sets up.

  Put in the block what a command does before its first training step, and
  no training: an error raised once training runs is no refusal and keeps
  its traceback.

  Args:
    parser: the command's `ArgumentParser` (its prog names the command in
      the line).
    about: what the value is, when the library's message cannot say, e.g.
      "--distill_fraction 2.0"; put before the message.

  Yields:
    None.
  """
  try:
    yield
  except ValueError as e:
    parser.error("%s: %s" % (about, e) if about else str(e))


def _number(text, convert, valid, right):
  """`text` converted, if that works and `valid` holds for the value;
  else an argparse error naming `text` and saying `right`."""
  try:
    value = convert(text)
  except ValueError:
    value = None
  if value is None or not valid(value):
    raise argparse.ArgumentTypeError("%s: give %s" % (text, right))
  return value


def positive_int(text):
  """argparse type: an int >= 1 (a count of steps, batches, ...)."""
  return _number(text, int, lambda n: n >= 1,
                 "a positive integer (1 or more)")


def non_negative_int(text):
  """argparse type: an int >= 0."""
  return _number(text, int, lambda n: n >= 0, "0 or a positive integer")


def positive_float(text):
  """argparse type: a finite float > 0 (a learning rate, ...)."""
  return _number(text, float, lambda x: x > 0 and math.isfinite(x),
                 "a finite number > 0, e.g. 1e-2")
