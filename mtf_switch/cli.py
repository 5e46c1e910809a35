"""The --gin_file and --gin_param flags of mtf_switch's commands."""
import gin


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
  """Parses the files and bindings of parsed flags; returns the files."""
  files = args.gin_file or args.default_gin_files
  gin.parse_config_files_and_bindings(files, args.gin_param)
  return files
