"""The backdoor method's trainer, where it always lived (`hf_privacy_backdoor.methods.backdoor` defines it).

The machinery every method shares (step clock, teacher, weight distance, logging, saving) is
`hf_privacy_backdoor.methods.base.UnlearningTrainer`; this module keeps the established import path.
"""

from .methods.backdoor import BackdoorUnlearningTrainer
from .methods.base import StopWhenForgottenCallback, UnlearningTrainer, feature_forward, frozen_heap


__all__ = [
    "BackdoorUnlearningTrainer",
    "StopWhenForgottenCallback",
    "UnlearningTrainer",
    "feature_forward",
    "frozen_heap",
]
