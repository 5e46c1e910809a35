"""Task and mixture registrations of mtf_switch (`mtf_switch.tasks`).

A T5 user adds `--module_import=mtf_switch.tasks` to get them.
"""
import mtf_switch  # noqa: F401  (TensorFlow compatibility shim first)
from mtf_switch.tasks import synthetic  # noqa: F401
