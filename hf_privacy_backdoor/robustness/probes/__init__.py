"""The built-in probes, one module each (`PROBE = Probe(...)`), registered in `registry.BUILTIN` order."""

from importlib import import_module

from ..registry import BUILTIN, register_probe


for _name in BUILTIN:
    register_probe(import_module(f"{__name__}.{_name}").PROBE)
