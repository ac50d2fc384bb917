"""Reading a run folder back for the probes: the defended model, the forget list, the photo split, the run's attack
settings (the file names and what is private: `run_folder`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import CLIPModel, CLIPProcessor

from ..data.faces import FaceSource, load_face_folder, load_membership
from ..data.images import make_photo_split
from ..data.names import normalize_name
from ..modeling import load_clip
from ..run_folder import RunFiles


if TYPE_CHECKING:
    from .config import RobustnessConfig


@dataclass
class RunFolder:
    """A run folder's inputs to the probes (names stay in memory and in private/ files only)."""

    path: Path
    removed: list[str]  # stored spellings in the face folder, in forget-list order
    settings: dict[str, Any]
    base_model: str
    faces: FaceSource
    membership: dict[str, list[str]] | None
    split: dict[str, Any]  # {"trigger": {name: [idx]}, "eval": {name: [idx]}}
    split_source: str  # "run" | "made here"
    adapter: bool
    num_photos: int
    tau: int
    num_candidates: int
    seed: int
    cover: list[str] = field(default_factory=list)  # cover people: forgotten too, not the ones who asked

    @property
    def private(self) -> Path:
        return RunFiles(self.path).private

    @property
    def forgotten(self) -> list[str]:
        """Everyone the run removed: the requested people and the cover people."""
        return [*self.removed, *self.cover]


def load_run_folder(run_dir: str | Path, config: RobustnessConfig) -> RunFolder:
    """Read and check a run folder: its model, private/ (forget list, photo split, report settings)."""
    files = RunFiles(run_dir)
    files.check()
    names = files.forget_names()
    cover = files.cover_names()
    if not {normalize_name(c) for c in cover} <= {normalize_name(n) for n in names}:
        raise ValueError(f"{str(files.cover_file)!r} lists people who are not on the run's forget list")
    names = [n for n in names if normalize_name(n) not in {normalize_name(c) for c in cover}]
    settings = files.report_settings()

    def setting(flag: str, key: str, required: bool = True):
        value = getattr(config, flag) if getattr(config, flag) is not None else settings.get(key)
        if value is None and required:
            raise ValueError(f"the run's private/report/report.json gives no {key}: pass --{flag}")
        return value

    faces = load_face_folder(setting("faces", "faces"))
    membership_file = setting("membership", "membership", required=False)
    seed = int(setting("seed", "seed", required=False) or 0)
    split, source = _photo_split(files, faces, seed)
    return RunFolder(
        path=files.root,
        removed=_resolve_removed(faces, names),
        cover=_resolve_removed(faces, cover) if cover else [],
        settings=settings,
        base_model=str(setting("base_model", "model_name_or_path")),
        faces=faces,
        membership=load_membership(membership_file) if membership_file else None,
        split=split,
        split_source=source,
        adapter=files.is_adapter,
        num_photos=int(setting("num_photos", "num_photos", required=False) or 20),
        tau=int(setting("tau", "tau", required=False) or 1),
        num_candidates=int(setting("num_candidates", "num_candidates", required=False) or 1000),
        seed=seed,
    )


def _resolve_removed(faces: FaceSource, names: Sequence[str]) -> list[str]:
    resolved = []
    for i, name in enumerate(names, start=1):
        try:
            resolved.append(faces.resolve(name))
        except KeyError:
            raise ValueError(f"removed person #{i} of the forget list has no photos in the face folder") from None
    return resolved


def _photo_split(files: RunFiles, faces: FaceSource, seed: int) -> tuple[dict[str, Any], str]:
    """The run's trigger/evaluation split; a text run with an explicit forget list has none: make one."""
    split = files.photo_split()
    if split is not None:
        return split, "run"
    split = make_photo_split(faces, faces.names(), 0.5, seed)
    return {"trigger": split["trigger"], "eval": split["eval"]}, "made here"


def load_defended(run: RunFolder) -> tuple[CLIPModel, CLIPProcessor]:
    """The defended model: the run folder's weights, or its LoRA adapter merged into the base."""
    if run.adapter:
        return load_clip(run.base_model, adapter=str(run.path))
    return load_clip(str(run.path))
