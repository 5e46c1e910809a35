"""Installs mtf_switch: the library, its gin configs and its task registry.

The top-level `gin/` and `tasks/` folders are installed as the subpackages
`mtf_switch.gin_configs` and `mtf_switch.tasks`, so that a T5 user writes
`--module_import=mtf_switch.tasks` and `--gin_file=models/switch_tiny.gin`.
The pinned stack is in requirements.txt and constraints.txt (see README).
"""
import setuptools

setuptools.setup(
    name="mtf-switch",
    version="0.1.0",
    description="Switch Transformer layers, configs and tasks for "
                "Mesh-TensorFlow and T5",
    python_requires=">=3.11,<3.12",
    packages=["mtf_switch", "mtf_switch.gin_configs", "mtf_switch.tasks"],
    package_dir={
        "mtf_switch": "mtf_switch",
        "mtf_switch.gin_configs": "gin",
        "mtf_switch.tasks": "tasks",
    },
    package_data={"mtf_switch": ["vocab/*.model"],
                  "mtf_switch.gin_configs": ["*.gin", "*/*.gin", "*/*/*.gin"]},
    entry_points={"console_scripts": [
        "mtf_switch_mesh_transformer = "
        "mtf_switch.mesh_transformer_main:console_entry_point",
    ]},
    install_requires=[
        "tensorflow==2.15.1",
        "mesh-tensorflow[transformer]==0.1.21",
        "gin-config==0.5.0",
        "numpy==1.26.4",
        "t5==0.9.4",
    ],
)
