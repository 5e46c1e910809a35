"""Switch Transformer (Fedus, Zoph and Shazeer, JMLR 2022) for Mesh-TensorFlow.

Importing this package makes mesh-tensorflow importable on the pinned
TensorFlow, registers the gin configurables of mtf_switch and adds the
package's gin folder to gin's search path, so that `models/switch_tiny.gin`
is found by name.
"""
from mtf_switch import compat  # noqa: F401  (must precede mesh_tensorflow)

import os

import gin

from mtf_switch import layers  # noqa: F401  (registers gin configurables)
from mtf_switch import models  # noqa: F401
from mtf_switch import routing  # noqa: F401

from mtf_switch import gin as _gin_configs  # setup.py maps it to gin/

GIN_DIR = os.path.dirname(_gin_configs.__file__)
gin.add_config_file_search_path(GIN_DIR)
