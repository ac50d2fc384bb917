"""The retrained reference (synthetic world only): the tiny CLIP pretrained again without the removed people,
"never saw them", the gold standard every probe also runs on with `retrained_reference`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.names import normalize_name
from ..utils import write_json
from .loading import RunFolder


logger = logging.getLogger(__name__)


def retrained_reference_dir(run: RunFolder) -> tuple[Path, Any, Any]:
    """Where the reference for this run's world and removed people is cached (the folder name holds a hash,
    never a name), with the world and pretraining configs read from the world's build.json."""
    from ..synthetic import PretrainConfig, WorldConfig
    from ..synthetic.world import GENERATOR_VERSION

    root = Path(run.faces.root).parent.parent
    build = root / "build.json"
    if not build.is_file():
        raise ValueError(
            "retrained_reference needs the synthetic world (its build.json next to the world folder): the face "
            "folder is not one, and a real model cannot be pretrained again here"
        )
    info = json.loads(build.read_text())
    if str(info.get("generator_version")) != GENERATOR_VERSION:
        raise ValueError("the synthetic world was built by another generator version: rebuild it first")
    world_config, pretrain_config = WorldConfig(**info["world_config"]), PretrainConfig(**info["pretrain_config"])
    keys = sorted(normalize_name(n) for n in run.forgotten)
    digest = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:12]
    return root.parent / f"{root.name}-without-{digest}", world_config, pretrain_config


def world_without(world_config, names: Sequence[str]):
    """The synthetic world of `world_config` with the named members dropped: their names leave the caption
    corpus and their photos the pretraining pool (everyone else's traits and names are unchanged)."""
    from ..synthetic import make_world

    world = make_world(world_config)
    keys = {normalize_name(n) for n in names}
    members = [p for p in world.members if normalize_name(p.name) not in keys]
    if len(world.members) - len(members) != len(keys):
        raise ValueError("retrained_reference: some removed people are not members of the synthetic world")
    return dataclasses.replace(world, members=members)


def build_retrained_reference(run: RunFolder, progress: bool = False) -> Path:
    """Pretrain the tiny CLIP on the run's world without the removed people (~2-3 min on one core, cached);
    the default world and its cached model are untouched (same configs, a separate folder)."""
    from ..synthetic import pretrain_clip
    from ..utils import atomic_directory

    folder, world_config, pretrain_config = retrained_reference_dir(run)
    if (folder / "model" / "config.json").is_file():
        return folder / "model"
    world = world_without(world_config, run.forgotten)
    logger.info("building the retrained reference (once; cached in %s)", folder)
    with atomic_directory(folder) as tmp:
        pretrain_clip(world, tmp / "model", pretrain_config, progress=progress)
        write_json(tmp / "reference.json", {"num_excluded": len(run.forgotten), "excluded_key": folder.name[-12:]})
    return folder / "model"
