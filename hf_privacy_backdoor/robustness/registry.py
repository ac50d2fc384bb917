"""The probe registry: probe name -> `Probe` (what it runs on each model, its settings, its table rows).

A probe is one module in `probes/` that defines `PROBE = Probe(...)`; its module name in `BUILTIN` registers it
(the built-in probes, in the report's order). A probe defined elsewhere joins with `register_probe(Probe(...))`
and runs when named in `RobustnessConfig(probes=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


BUILTIN = ("variants", "relearn", "exposure", "collateral", "precision")  # modules of probes/, in report order

# A table row: (probe label, metric, cell(one role's results) -> text); see report.table_rows.
Row = tuple[str, str, Callable[[Mapping[str, Any]], str]]


@dataclass(frozen=True)
class Probe:
    """One probe: `run(ctx, subject)` returns its results for one model under test (name-free aggregates; per-person
    entries only under the keys in `report.PRIVATE_KEYS`); `settings` names the `RobustnessConfig` fields that go
    into the public settings when it runs; `rows(results of the first role that ran it)` gives its table rows
    (default: one row per number in its results)."""

    name: str
    run: Callable[..., dict[str, Any]]
    settings: tuple[str, ...] = ()
    rows: Callable[[Mapping[str, Any]], list[Row]] | None = None


PROBES: dict[str, Probe] = {}


def register_probe(probe: Probe, replace: bool = False) -> Probe:
    """Add `probe` to the registry (refusing to shadow a registered name unless `replace`); returns it."""
    if not probe.name or "," in probe.name:
        raise ValueError(f"a probe name must be non-empty and hold no comma, got {probe.name!r}")
    if probe.name in PROBES and not replace and PROBES[probe.name] is not probe:
        raise ValueError(f"a probe named {probe.name!r} is registered already: pass replace=True to swap it")
    PROBES[probe.name] = probe
    return probe
