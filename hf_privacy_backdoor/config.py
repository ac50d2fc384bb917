"""The backdoor method's config, where it always lived (`hf_privacy_backdoor.methods.backdoor` defines it).

Every method's config lives in `hf_privacy_backdoor.methods`; this module keeps the established import path.
"""

from .methods.backdoor import IMAGE_SCHEDULE, TEXT_SCHEDULE, BackdoorUnlearningConfig
from .methods.base_config import TOWERS, UnlearningConfig


DEFENSES = TOWERS  # the former name of the towers axis

__all__ = ["DEFENSES", "IMAGE_SCHEDULE", "TEXT_SCHEDULE", "TOWERS", "BackdoorUnlearningConfig", "UnlearningConfig"]
