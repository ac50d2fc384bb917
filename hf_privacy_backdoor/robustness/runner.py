"""`run_robustness`: every configured probe on the defended model, the base model (control) and, if asked, the
retrained reference; the report and the public summary section."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..modeling import load_clip
from .config import RobustnessConfig
from .context import ProbeContext, Subject, attack_stats, log, make_context, make_subject
from .loading import load_defended, load_run_folder
from .reference import build_retrained_reference
from .registry import PROBES
from .report import ROLES, RobustnessReport, write_robustness


def run_robustness(
    run_dir: str | Path, config: RobustnessConfig | None = None, write: bool = True
) -> RobustnessReport:
    """Run the configured probes on the run's defended model, the base model (control) and, if asked, the
    retrained reference; write the private report and the public summary section unless `write` is False."""
    config = config or RobustnessConfig()
    run = load_run_folder(run_dir, config)
    ctx = make_context(run, config)
    start = time.time()
    ctx.base = make_subject(ctx, "base", *load_clip(run.base_model))
    subjects = [make_subject(ctx, "defended", *load_defended(run))] + ([ctx.base] if config.probe_base else [])
    if config.retrained_reference:
        subjects.append(make_subject(ctx, "retrained", *load_clip(str(build_retrained_reference(run)))))
    report = RobustnessReport(Path(run_dir), list(run.removed), public_settings(ctx))
    report.names = [p.name for p in ctx.base.attack.people]
    for subject in subjects:
        report.roles[subject.role] = probe_subject(ctx, subject)
    report.roles.setdefault("base", {"exact": attack_stats(ctx, ctx.base.attack)})
    report.roles = {role: report.roles[role] for role in ROLES if role in report.roles}
    report.settings["seconds"] = round(time.time() - start, 1)
    if write:
        write_robustness(run, report)
    return report


def probe_subject(ctx: ProbeContext, subject: Subject) -> dict[str, Any]:
    """The exact-name attack's statistics and each configured probe's results for one model under test."""
    results: dict[str, Any] = {"exact": attack_stats(ctx, subject.attack)}
    for probe in ctx.config.probe_list:
        start = time.time()
        results[probe] = PROBES[probe].run(ctx, subject)
        log(ctx, f"{probe} on the {subject.role} model: {time.time() - start:.1f} s")
    return results


def public_settings(ctx: ProbeContext) -> dict[str, Any]:
    """The name-free settings of this probing: the attack's, and those each configured probe declares."""
    config, run = ctx.config, ctx.run
    settings = {
        "probes": config.probe_list,
        "quick": config.quick,
        "num_removed": len(run.removed),
        "num_cover": len(run.cover),
        "defense": run.settings.get("defense"),
        "use_lora": run.adapter,
        "num_candidates": len(ctx.candidates),
        "num_photos": ctx.num_photos,
        "tau": ctx.tau,
        "seed": ctx.seed,
        "photo_split": run.split_source,
        "retrained_reference": config.retrained_reference,
        "probe_base": config.probe_base,
    }
    for probe in config.probe_list:
        settings.update({key: getattr(config, key) for key in PROBES[probe].settings})
    return settings
