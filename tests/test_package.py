"""Importing mtf_switch: gin files found by name, quietly."""
import subprocess
import sys

_PARSE = """
import gin
import mtf_switch
gin.parse_config_file(%r)
print("parsed")
"""


def _parse_in_fresh_interpreter(gin_file):
  return subprocess.run([sys.executable, "-c", _PARSE % gin_file],
                        capture_output=True, text=True, timeout=300)


def test_gin_files_are_found_by_name_without_error_lines():
  result = _parse_in_fresh_interpreter("models/switch_tiny.gin")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "parsed" in result.stdout
  assert "Path not found" not in result.stderr
  assert "ERROR" not in result.stderr


def test_a_gin_file_found_nowhere_still_fails_naming_it():
  result = _parse_in_fresh_interpreter("models/no_such_model.gin")
  assert result.returncode != 0
  assert "models/no_such_model.gin" in result.stderr
