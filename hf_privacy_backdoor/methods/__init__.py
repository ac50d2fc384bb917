"""Unlearning methods as plug-ins: a registry from a method's name to its config and trainer.

Every method is one module here with one config (a `UnlearningConfig`) and one trainer (a `UnlearningTrainer`)
over the shared machinery of `base.py`; adding a method is that module plus one line in `_REGISTRY`.

    from hf_privacy_backdoor.methods import get_method
    method = get_method("grad_diff")
    trainer = method.trainer(model=model, args=method.config(output_dir="out"), ...)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


# name -> (module, config class, trainer class)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "backdoor": ("backdoor", "BackdoorUnlearningConfig", "BackdoorUnlearningTrainer"),
    "retain_finetune": ("retain_finetune", "RetainFinetuneConfig", "RetainFinetuneTrainer"),
    "grad_ascent": ("grad_ascent", "GradAscentConfig", "GradAscentTrainer"),
    "grad_diff": ("grad_diff", "GradDiffConfig", "GradDiffTrainer"),
    "slug": ("slug", "SlugConfig", "SlugTrainer"),
}


@dataclass(frozen=True)
class Method:
    """A registered method: its name, config class and trainer class (imported on first use)."""

    name: str
    module: str
    config_name: str
    trainer_name: str

    def _load(self, attribute: str):
        return getattr(importlib.import_module(f".{self.module}", __name__), attribute)

    @property
    def config(self) -> type:
        """The method's config class (its module is imported on first access)."""
        return self._load(self.config_name)

    @property
    def trainer(self) -> type:
        """The method's trainer class (its module is imported on first access)."""
        return self._load(self.trainer_name)


METHODS: dict[str, Method] = {name: Method(name, *entry) for name, entry in _REGISTRY.items()}


def get_method(name: str) -> Method:
    """The registered method `name`; an unknown name is an error that lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {sorted(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "get_method"]
