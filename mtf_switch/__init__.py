"""Switch Transformer (Fedus, Zoph and Shazeer, JMLR 2022) for Mesh-TensorFlow.

Importing this package makes mesh-tensorflow work on the pinned
TensorFlow (importable, and its decodes text off TPU, one line each:
`mtf_switch.t5.compat`), registers the gin configurables of mtf_switch and
adds the package's gin folder to gin's search path, so that
`models/switch_tiny.gin` is found by name, and keeps a correct run's logs
free of lines that read like failures (`mtf_switch.t5.quiet`).
"""
from mtf_switch.t5 import compat  # first: imports TensorFlow quietly

import os

import gin

from mtf_switch import distillation  # noqa: F401  (gin configurables)
from mtf_switch import layers  # noqa: F401
from mtf_switch import models  # noqa: F401
from mtf_switch import moe1d  # noqa: F401
from mtf_switch import routers  # noqa: F401
from mtf_switch.t5 import quiet
from mtf_switch.training import mesh  # noqa: F401
from mtf_switch.training import step  # noqa: F401
from mtf_switch.training import upcycling  # noqa: F401

compat.decode_to_text()
compat.one_line_each()


def _gin_dir():
  """The gin folder: installed as mtf_switch/gin_configs (see setup.py), or
  the top-level gin/ of a source tree or editable install."""
  package_dir = os.path.dirname(os.path.abspath(__file__))
  installed = os.path.join(package_dir, "gin_configs")
  if os.path.isdir(installed):
    return installed
  return os.path.join(os.path.dirname(package_dir), "gin")


GIN_DIR = _gin_dir()
gin.add_config_file_search_path(GIN_DIR)
quiet.install_log_filters()
