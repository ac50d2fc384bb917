"""Robustness probes: does a defended model still give the removed people away to a stronger adversary?

The paper's attack (IDIA) asks for the exact full name. `run_robustness` reads a run folder (text, image, both;
full model or LoRA adapter) and tries harder, each probe selectable:

* **variants**: the attack with every member's name replaced in the candidate list by a variant (lower case,
  first name, last name, initial + last name, one typo, a title), judged by the variant;
* **relearn**: a short benign contrastive fine-tune (plain CLIP loss) on data that never shows a removed
  person or names one (the synthetic world's object images + kept members' trigger-half portraits, or a
  folder), then the attack; the same fine-tune of the base model is the control;
* **exposure**: who moved most between the public base model and the defended one (text embeddings of every
  candidate name, photo embeddings of every person), and what the defended model alone gives away
  (similarity of "a photo of NAME" to "a photo of <target>", of a person's photos to the face centroid);
  the removed people's ranks (private) and the AUCs (public);
* **collateral**: kept members wrongfully unlearned under other seeded candidate lists;
* **precision**: the attack on fp16 / bf16 casts and on int8 dynamic quantisation of the linear layers.

Every probe also runs on the base model (the other end of the scale: it must still find the people, or the
probe proves nothing) and, with `retrained_reference`, on a tiny CLIP pretrained again on the synthetic
world without the removed people ("never saw them", the gold standard). Per-person results go to
`<run>/private/report/robustness.{json,md}`; name-free aggregates to the `robustness` section of
`<run>/unlearning_summary.json`.

Layout: `config` (what to probe), `loading` (reading the run folder back), `context` (the models under test and the
attack shared by every probe), `probes/` (one module per probe, over `registry`), `reference` (the retrained
reference), `runner` (`run_robustness`), `report` (results, report files, tables). Adding a probe is one module in
`probes/` that defines `PROBE = Probe(...)` plus its name in `registry.BUILTIN`; a probe defined elsewhere joins
with `register_probe` and runs when named in `RobustnessConfig(probes=...)`.
"""

from ..data.names import name_variant
from . import probes as _probes  # noqa: F401  (registers the built-in probes)
from .config import PRECISION_MODES, PRECISIONS, RELEARN_PORTRAITS, RobustnessConfig
from .context import MEMBER, ProbeContext, Subject, attack, attack_stats, make_context, make_subject
from .loading import RunFolder, load_defended, load_run_folder
from .probes.collateral import base_list_attack, probe_collateral
from .probes.exposure import (
    EXPOSURE_LABELS,
    auc,
    centroid_scores,
    cosine_distance,
    most_exposed,
    photo_embeddings,
    probe_exposure,
    ranking,
    single_model_name_scores,
)
from .probes.precision import cast_model, probe_precision
from .probes.relearn import RelearnData, load_relearn_data, probe_relearn, relearn_finetune
from .probes.variants import probe_variants, variant_attack
from .reference import build_retrained_reference, retrained_reference_dir, world_without
from .registry import BUILTIN, PROBES, Probe, Row, register_probe
from .report import (
    FORMAT_VERSION,
    PRIVATE_KEYS,
    ROLES,
    RobustnessReport,
    exposure_in_words,
    format_card_section,
    format_demo_line,
    format_markdown,
    format_table,
    table_rows,
    write_robustness,
)
from .runner import probe_subject, public_settings, run_robustness


__all__ = [
    "BUILTIN",
    "EXPOSURE_LABELS",
    "FORMAT_VERSION",
    "MEMBER",
    "PRECISIONS",
    "PRECISION_MODES",
    "PRIVATE_KEYS",
    "PROBES",
    "RELEARN_PORTRAITS",
    "ROLES",
    "Probe",
    "ProbeContext",
    "RelearnData",
    "RobustnessConfig",
    "RobustnessReport",
    "Row",
    "RunFolder",
    "Subject",
    "attack",
    "attack_stats",
    "auc",
    "base_list_attack",
    "build_retrained_reference",
    "cast_model",
    "centroid_scores",
    "cosine_distance",
    "exposure_in_words",
    "format_card_section",
    "format_demo_line",
    "format_markdown",
    "format_table",
    "load_defended",
    "load_relearn_data",
    "load_run_folder",
    "make_context",
    "make_subject",
    "most_exposed",
    "name_variant",
    "photo_embeddings",
    "probe_collateral",
    "probe_exposure",
    "probe_precision",
    "probe_relearn",
    "probe_subject",
    "probe_variants",
    "public_settings",
    "ranking",
    "register_probe",
    "relearn_finetune",
    "retrained_reference_dir",
    "run_robustness",
    "single_model_name_scores",
    "table_rows",
    "variant_attack",
    "world_without",
    "write_robustness",
]
