"""hf_privacy_backdoor: remove people from CLIP models with backdoor unlearning, and prove it with an attack.

    from hf_privacy_backdoor import BackdoorUnlearningConfig, BackdoorUnlearningTrainer
    from hf_privacy_backdoor import get_method  # any registered method: get_method("slug").config / .trainer

The public names are imported on first use, so that `import hf_privacy_backdoor` stays light.
"""

from typing import TYPE_CHECKING


__version__ = "0.1.0"

_EXPORTS = {
    "BackdoorUnlearningConfig": "config",
    "BackdoorUnlearningTrainer": "trainer",
    "UnlearningConfig": "methods.base_config",
    "UnlearningTrainer": "methods.base",
    "get_method": "methods",
    "METHODS": "methods",
    "LoraArguments": "peft_utils",
    "get_peft_config": "peft_utils",
    "load_clip": "modeling",
    "UnlearnArguments": "run",
    "run_unlearning": "run",
}

__all__ = [
    "METHODS",
    "BackdoorUnlearningConfig",
    "BackdoorUnlearningTrainer",
    "LoraArguments",
    "UnlearningConfig",
    "UnlearningTrainer",
    "get_method",
    "UnlearnArguments",
    "get_peft_config",
    "load_clip",
    "run_unlearning",
]

if TYPE_CHECKING:
    from .config import BackdoorUnlearningConfig
    from .methods import METHODS, get_method
    from .methods.base import UnlearningTrainer
    from .methods.base_config import UnlearningConfig
    from .modeling import load_clip
    from .peft_utils import LoraArguments, get_peft_config
    from .run import UnlearnArguments, run_unlearning
    from .trainer import BackdoorUnlearningTrainer


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
