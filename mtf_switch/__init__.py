"""Switch Transformer (Fedus, Zoph and Shazeer, JMLR 2022) for Mesh-TensorFlow.

Importing this package makes mesh-tensorflow importable on the pinned
TensorFlow, registers the gin configurables of mtf_switch and adds the
package's gin folder to gin's search path, so that `models/switch_tiny.gin`
is found by name (without the ERROR lines gin logs while it searches).
"""
from mtf_switch import compat  # noqa: F401  (must precede mesh_tensorflow)

import logging
import os

import gin

from mtf_switch import distillation  # noqa: F401  (gin configurables)
from mtf_switch import layers  # noqa: F401
from mtf_switch import models  # noqa: F401
from mtf_switch import routers  # noqa: F401


def _gin_dir():
  """The gin folder: installed as mtf_switch/gin_configs (see setup.py), or
  the top-level gin/ of a source tree or editable install."""
  package_dir = os.path.dirname(os.path.abspath(__file__))
  installed = os.path.join(package_dir, "gin_configs")
  if os.path.isdir(installed):
    return installed
  return os.path.join(os.path.dirname(package_dir), "gin")


class _QuietGinSearch(logging.Filter):
  """Drops gin's "Path not found" lines: gin logs one at ERROR level for
  every search location that does not hold a file it then finds in another
  (five for models/switch_tiny.gin).  A file found nowhere still fails,
  with gin's own error naming it and the paths searched."""

  def filter(self, record):
    return not (record.module == "resource_reader"
                and str(record.msg).startswith("Path not found"))


GIN_DIR = _gin_dir()
gin.add_config_file_search_path(GIN_DIR)
logging.getLogger().addFilter(_QuietGinSearch())
