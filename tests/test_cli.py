"""mtf_switch.cli: argparse types, one-line refusals, gin flags as
refusals."""
import argparse

import gin
import pytest

from mtf_switch import cli


def _parser():
  parser = cli.ArgumentParser(prog="job.py")
  parser.add_argument("--steps", type=cli.positive_int, default=1)
  parser.add_argument("--skips", type=cli.non_negative_int, default=0)
  parser.add_argument("--rate", type=cli.positive_float, default=1.0)
  return parser


def _error(capsys, parse):
  with pytest.raises(SystemExit) as exit_info:
    parse()
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  return captured.err


def test_types_take_good_values():
  args = _parser().parse_args(["--steps", "3", "--skips", "0", "--rate",
                               "1e4"])
  assert (args.steps, args.skips, args.rate) == (3, 0, 1e4)


@pytest.mark.parametrize("flag,value,right", [
    ("--steps", "0", "give a positive integer (1 or more)"),
    ("--steps", "-5", "give a positive integer (1 or more)"),
    ("--steps", "2.5", "give a positive integer (1 or more)"),
    ("--skips", "-1", "give 0 or a positive integer"),
    ("--rate", "-1", "give a finite number > 0, e.g. 1e-2"),
    ("--rate", "0", "give a finite number > 0, e.g. 1e-2"),
    ("--rate", "nan", "give a finite number > 0, e.g. 1e-2"),
    ("--rate", "inf", "give a finite number > 0, e.g. 1e-2"),
    ("--rate", "fast", "give a finite number > 0, e.g. 1e-2"),
])
def test_a_bad_value_is_one_line_naming_it_and_what_is_right(
    capsys, flag, value, right):
  err = _error(capsys, lambda: _parser().parse_args([flag, value]))
  # argparse's own line, without the usage it prints above it.
  assert err == "job.py: error: argument %s: %s: %s\n" % (flag, value, right)


def test_refusals_turn_a_set_up_value_error_into_one_line(capsys):
  parser = _parser()

  def set_up():
    with cli.refusals(parser, "--task x"):
      # gin's context lines, as a configurable's error carries them.
      raise ValueError("unknown task 'x'; give one of a, b\n"
                       "  In call to configurable 'f' (<function f at "
                       "0x7f00>)\n  In file 'm.gin', line 2\n    f.t = 'x'")
  assert _error(capsys, set_up) == (
      "job.py: error: --task x: unknown task 'x'; give one of a, b In file "
      "'m.gin', line 2 f.t = 'x'\n")


def test_refusals_let_other_errors_through():
  # An error that is no ValueError is no refusal: its traceback stays.
  with pytest.raises(RuntimeError, match="broken"):
    with cli.refusals(_parser()):
      raise RuntimeError("broken")


def _parsed(files, bindings):
  parser = argparse.ArgumentParser()
  cli.add_flags(parser, default_files=["models/switch_tiny.gin"])
  args = parser.parse_args(sum((["--gin_file", f] for f in files), []) +
                           sum((["--gin_param", b] for b in bindings), []))
  return cli.parse(args)


def test_gin_flags_parse_and_their_errors_are_value_errors(tmp_path):
  assert _parsed([], ["mtf_switch.SwitchFeedForward.num_experts = 8"]) == [
      "models/switch_tiny.gin"]
  assert gin.query_parameter("mtf_switch.SwitchFeedForward.num_experts") == 8
  gin.clear_config()
  with pytest.raises(ValueError, match=r"Unable to open file: nope\.gin\. "
                     r"Searched config paths: .* Give a gin file by path"):
    _parsed(["nope.gin"], [])
  with pytest.raises(ValueError, match=r"No configurable matching "
                     r"'mtf_switch\.Nope'"):
    _parsed([], ["mtf_switch.Nope.x = 1"])
  with pytest.raises(ValueError, match=r"expected ':' or '='\. In bindings "
                     r"string line 2: garbage \($"):
    _parsed([], ["num_experts = 2", "garbage ("])
  bad = tmp_path / "bad.gin"
  bad.write_text("num_experts = 2\nnum_experts\n")
  with pytest.raises(ValueError, match=r"In %s line 2: num_experts$"
                     % str(bad).replace(".", r"\.")):
    _parsed([str(bad)], [])
