"""Installs mtf_switch: the library, its gin configs and its task registry.

The top-level `gin/` and `tasks/` folders are installed as the subpackages
`mtf_switch.gin_configs` and `mtf_switch.tasks`, so that a T5 user writes
`--module_import=mtf_switch.tasks` and `--gin_file=models/switch_tiny.gin`.
The pinned stack is in requirements.txt and constraints.txt (see docs/setup.md).

`_mtf_switch_import_hook` and the `mtf_switch_import_hook.pth` that runs it
at start-up make mesh-tensorflow importable in any import order (see that
module); the .pth file goes into site-packages with a wheel and with an
editable install alike, and is uninstalled with the package.
"""
import os

import setuptools
from setuptools.command import build_py

HOOK_PTH = "mtf_switch_import_hook.pth"
HOOK_PTH_LINE = ("import _mtf_switch_import_hook; "
                 "_mtf_switch_import_hook.install()\n")


class BuildPyWithHook(build_py.build_py):
  """build_py that also writes the hook's .pth file to the top of what
  becomes site-packages: build_lib for a wheel; for an editable install
  (setuptools' `editable_mode`), the editable wheel's own directory, since
  only that is installed."""

  def run(self):
    super().run()
    if self.editable_mode:
      target = self.get_finalized_command("install").install_lib
    else:
      target = self.build_lib
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, HOOK_PTH), "w") as f:
      f.write(HOOK_PTH_LINE)


setuptools.setup(
    name="mtf-switch",
    version="0.1.0",
    description="Switch Transformer layers, configs and tasks for "
                "Mesh-TensorFlow and T5",
    python_requires=">=3.11,<3.12",
    packages=(setuptools.find_packages(include=["mtf_switch", "mtf_switch.*"])
              + ["mtf_switch.gin_configs", "mtf_switch.tasks"]),
    py_modules=["_mtf_switch_import_hook"],
    cmdclass={"build_py": BuildPyWithHook},
    package_dir={
        "mtf_switch": "mtf_switch",
        "mtf_switch.gin_configs": "gin",
        "mtf_switch.tasks": "tasks",
    },
    package_data={"mtf_switch.corpora": ["vocab/*.model",
                                         "vocab/*.distributions.txt"],
                  "mtf_switch.gin_configs": ["*.gin", "*/*.gin", "*/*/*.gin"]},
    # Every command keeps its `python -m` module; these are the same mains
    # under the names T5 users know from `t5_mesh_transformer`.
    entry_points={"console_scripts": [
        "mtf_switch_train = mtf_switch.training.train:main",
        "mtf_switch_study = mtf_switch.studies.run_study:main",
        "mtf_switch_plan = mtf_switch.planning.plan:main",
        "mtf_switch_size = mtf_switch.planning.model_size:main",
        "mtf_switch_export_hf = mtf_switch.hf.export_hf:main",
        "mtf_switch_import_hf = mtf_switch.hf.import_hf:main",
        "mtf_switch_mesh_transformer = "
        "mtf_switch.t5.mesh_transformer_main:console_entry_point",
    ]},
    install_requires=[
        "tensorflow==2.15.1",
        "mesh-tensorflow[transformer]==0.1.21",
        "gin-config==0.5.0",
        "numpy==1.26.4",
        "t5==0.9.4",
    ],
)
