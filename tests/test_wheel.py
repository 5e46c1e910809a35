"""The wheel, installed (not editable) in a fresh virtual environment.

The environment gets the pinned stack through a path (.pth) line to the
project venv's site-packages, whose own .pth files (the editable install's
finder, its import hook) are not run: mtf_switch, its hook, gin files,
vocabulary and tasks can come only from the wheel. Every command runs
from a directory outside the checkout.
"""
import glob
import os
import pathlib
import re
import subprocess
import sys
import sysconfig

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(command, cwd, **kwargs):
  result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          timeout=900, **kwargs)
  assert result.returncode == 0, (command, result.stderr[-5000:])
  return result


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
  """(python of a fresh venv with the wheel installed, a work dir outside
  the checkout, the venv's site-packages)."""
  tmp = tmp_path_factory.mktemp("wheel")
  work = tmp / "work"
  work.mkdir()
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps",
        "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(REPO)],
       cwd=work)
  venv = tmp / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
  python = str(venv / "bin" / "python")
  purelib = _run([python, "-c", "import sysconfig; "
                  "print(sysconfig.get_paths()['purelib'])"],
                 cwd=work).stdout.strip()
  stack = sysconfig.get_paths()["purelib"]
  pathlib.Path(purelib, "pinned_stack.pth").write_text(stack + "\n")
  # pip sees the editable install's metadata on that path: install anyway.
  wheel, = glob.glob(str(tmp / "dist" / "mtf_switch-*.whl"))
  _run([python, "-m", "pip", "install", "-q", "--no-deps",
        "--ignore-installed", wheel], cwd=work)
  return python, work, purelib


@pytest.mark.slow
def test_the_package_gin_files_vocabulary_and_tasks_come_from_the_wheel(
    fresh):
  python, work, purelib = fresh
  out = _run([python, "-c", """
import mesh_tensorflow  # first: the wheel's import hook makes it work
import mtf_switch, mtf_switch.tasks, seqio
from mtf_switch.corpora import default_corpus
import _mtf_switch_import_hook
print(mtf_switch.__file__)
print(mtf_switch.GIN_DIR)
print(default_corpus.VOCABULARY_PATH)
print(_mtf_switch_import_hook.__file__)
print(seqio.get_mixture_or_task("mtf_switch_copy_words").name)
"""], cwd=work).stdout.split()
  for path in out[:4]:
    assert path.startswith(purelib), (path, purelib)
  assert out[1].endswith("gin_configs") and out[4] == "mtf_switch_copy_words"


@pytest.mark.slow
def test_the_main_job_runs_from_the_wheel(fresh, tmp_path):
  python, work, _ = fresh
  out = _run([python, "-m", "mtf_switch.training.train", "--model_dir",
              str(tmp_path / "model"), "--steps", "4", "--log_every", "2",
              "--batch_size", "4"], cwd=work).stdout
  assert "step 4/4" in out, out[-3000:]
  assert (tmp_path / "model" / "checkpoint").exists()


@pytest.mark.slow
def test_the_size_counter_counts_switch_c_from_the_wheel(fresh):
  python, work, _ = fresh
  out = _run([python, "-m", "mtf_switch.planning.model_size", "--gin_file",
              "models/switch_c.gin", "--gin_file",
              "layouts/expert_data_2048.gin"], cwd=work).stdout
  # Table 9: 1571B parameters.
  assert re.search(r"parameters:\s+1\.571T", out), out[-3000:]


@pytest.mark.slow
def test_t5s_binary_trains_the_tiny_model_from_the_wheel(fresh, tmp_path):
  python, work, _ = fresh
  model_dir = tmp_path / "model"
  _run([python, "-m", "t5.models.mesh_transformer_main",
        "--model_dir=%s" % model_dir, "--module_import=mtf_switch.tasks",
        "--gin_file=dataset.gin", "--gin_file=models/switch_tiny.gin",
        "--gin_file=layouts/cpu_expert_data_2.gin",
        "--gin_param=MIXTURE_NAME = 'mtf_switch_copy_words'",
        "--gin_param=utils.run.sequence_length = "
        "{'inputs': 32, 'targets': 32}",
        "--gin_param=utils.run.batch_size = ('sequences_per_batch', 4)",
        "--gin_param=utils.run.train_steps = 2",
        "--gin_param=utils.run.iterations_per_loop = 2"],
       cwd=work, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert (model_dir / "operative_config.gin").exists()
  assert (model_dir / "model.ckpt-2.index").exists()


# The commands the README and docs name, each a console script.
CONSOLE_SCRIPTS = {
    "mtf_switch_train", "mtf_switch_study", "mtf_switch_plan",
    "mtf_switch_size", "mtf_switch_export_hf", "mtf_switch_import_hf",
    "mtf_switch_mesh_transformer"}


@pytest.mark.slow
def test_every_command_is_a_console_script_of_the_wheel(fresh):
  python, work, _ = fresh
  installed = set(_run([python, "-c", """
import importlib.metadata
for entry in importlib.metadata.distribution("mtf-switch").entry_points:
  if entry.group == "console_scripts":
    print(entry.name)
"""], cwd=work).stdout.split())
  assert installed == CONSOLE_SCRIPTS
  bin_dir = os.path.dirname(python)
  for name in sorted(CONSOLE_SCRIPTS - {"mtf_switch_mesh_transformer"}):
    out = _run([os.path.join(bin_dir, name), "--help"], cwd=work).stdout
    assert out.startswith("usage: %s " % name), (name, out[:300])
  # T5's binary parses absl flags (whose help exits 1): it lists T5's own.
  out = subprocess.run([os.path.join(bin_dir, "mtf_switch_mesh_transformer"),
                        "--helpfull"], cwd=work, capture_output=True,
                       text=True, timeout=900).stdout
  assert "--model_dir" in out and "--module_import" in out


@pytest.mark.slow
def test_uninstalling_removes_the_package_and_its_hook(fresh):
  # Last in this file: the fixture's venv has no mtf_switch after it.
  python, work, purelib = fresh
  _run([python, "-m", "pip", "uninstall", "-y", "-q", "mtf-switch"],
       cwd=work)
  left = [name for name in os.listdir(purelib)
          if "mtf_switch" in name or name == "mtf_switch_import_hook.pth"]
  assert not left, left
  result = subprocess.run([python, "-c", "import mesh_tensorflow"],
                          cwd=work, capture_output=True, text=True,
                          timeout=300)
  assert "register_tensor_conversion_function" in result.stderr
