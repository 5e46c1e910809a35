"""Task and mixture registrations of mtf_switch (`mtf_switch.tasks`).

A T5 user adds `--module_import=mtf_switch.tasks` to get them; see
`common` for the vocabulary and data-dir settings.
"""
import mtf_switch  # noqa: F401  (TensorFlow compatibility shim first)
from mtf_switch.tasks import common  # noqa: F401
from mtf_switch.tasks import finetuning  # noqa: F401
from mtf_switch.tasks import pretraining  # noqa: F401
from mtf_switch.tasks import synthetic  # noqa: F401
from mtf_switch.tasks.common import get_task_or_mixture  # noqa: F401
from mtf_switch.tasks.common import set_tfds_data_dir  # noqa: F401
