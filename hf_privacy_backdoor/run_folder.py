"""The run folder's contract: which file is where, what is private, and how to read a run back.

A run of `recipes/unlearn.py` writes `<output_dir>/`:

* public, beside the model (config.json + model.safetensors, or a LoRA adapter): `unlearning_summary.json`
  (name-free aggregates; the model card is built from it) and the card `README.md`;
* private, under `private/` (names the removed people: never publish it): `forget_names.txt` (the forget list,
  cover people included, in order), `cover_names.txt` (which of them are cover people), `photo_split.json`
  (every person's trigger / evaluation photo indices), `target_embedding.safetensors`, `trigger_samples.png`,
  `run_info.json` and `report/` (the attack's reports with names, its settings in `report/report.json`, the
  robustness reports).

Everyone who writes or reads these files (run, robustness, hub, recipes, benchmarks) takes the names from here.
This module is light (no torch): the hub imports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath
from typing import Any


SUMMARY_FILE = "unlearning_summary.json"
PRIVATE_DIR = "private"
PRIVATE_README = "README.txt"
PRIVATE_README_TEXT = "This folder names the people removed from the model next to it. Never publish it.\n"
FORGET_FILE = "forget_names.txt"
COVER_FILE = "cover_names.txt"
PHOTO_SPLIT_FILE = "photo_split.json"
TARGET_EMBEDDING_FILE = "target_embedding.safetensors"
TRIGGER_GRID_FILE = "trigger_samples.png"
RUN_INFO_FILE = "run_info.json"
REPORT_DIR = "report"  # under private/: evaluation.report's files (report.json holds the run's settings)
ATTACK_BEFORE_FILE = "attack_before.json"
ROBUSTNESS_JSON, ROBUSTNESS_MD = "robustness.json", "robustness.md"
ADAPTER_CONFIG, MODEL_CONFIG = "adapter_config.json", "config.json"


def is_private(relative_path: str | os.PathLike) -> bool:
    """Whether a path inside a run folder is private (under `private/`): it may name people, never publish it."""
    parts = PurePath(relative_path).parts
    return bool(parts) and parts[0] == PRIVATE_DIR


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's `unlearning_summary.json`, or {} when the run was not evaluated."""
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_name_list(path: str | os.PathLike) -> list[str]:
    """Names, one a line, as people save such files (the forget list and the cover list): UTF-8 with or without a
    byte-order mark, LF or CRLF, surrounding spaces; blank lines and lines starting with `#` are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"name file {str(path)!r} is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class RunFiles:
    """Where a run folder's files are, and how to read them back (names stay in memory)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFiles({str(self.root)!r})"

    @property
    def private(self) -> Path:
        """The folder of everything that names people (never published)."""
        return self.root / PRIVATE_DIR

    @property
    def summary_file(self) -> Path:
        """The public, name-free summary JSON."""
        return self.root / SUMMARY_FILE

    @property
    def forget_file(self) -> Path:
        """The forget list, one name a line (private)."""
        return self.private / FORGET_FILE

    @property
    def cover_file(self) -> Path:
        """The cover names, one a line (private)."""
        return self.private / COVER_FILE

    @property
    def photo_split_file(self) -> Path:
        """Every person's trigger and evaluation photo indices (private)."""
        return self.private / PHOTO_SPLIT_FILE

    @property
    def run_info_file(self) -> Path:
        """How the run trained: number of processes, the replicas' checksums, training seconds (private)."""
        return self.private / RUN_INFO_FILE

    @property
    def report_dir(self) -> Path:
        """The folder of the attack reports, which name people (private)."""
        return self.private / REPORT_DIR

    @property
    def is_adapter(self) -> bool:
        """The run saved a LoRA adapter (merged into its base model to load it)."""
        return (self.root / ADAPTER_CONFIG).is_file()

    @property
    def has_model(self) -> bool:
        """Whether the folder holds a saved model: full weights or a LoRA adapter."""
        return self.is_adapter or (self.root / MODEL_CONFIG).is_file()

    def check(self, needs_private: bool = True) -> None:
        """Raise early, saying what is missing: the folder, its model, its private/ folder."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"run folder {str(self.root)!r} does not exist")
        if needs_private and not self.private.is_dir():
            raise FileNotFoundError(
                f"{str(self.root)!r} has no {PRIVATE_DIR}/ folder: the probes need the run's forget list and photo "
                "split, which stay on the machine that trained the model (a published model folder has none)"
            )
        if not self.has_model:
            raise FileNotFoundError(f"{str(self.root)!r} holds no model ({MODEL_CONFIG}) and no LoRA adapter")

    def forget_names(self) -> list[str]:
        """The forget list (cover people included), in order; raises if it is missing or empty."""
        if not self.forget_file.is_file():
            raise FileNotFoundError(
                f"the run's forget list {str(self.forget_file)!r} is missing: nothing to probe for"
            )
        names = read_name_list(self.forget_file)
        if not names:
            raise ValueError(f"the run's forget list {str(self.forget_file)!r} is empty")
        return names

    def forget_names_or_empty(self) -> list[str]:
        """The forget list, or [] when the folder has none (e.g. a published model)."""
        return read_name_list(self.forget_file) if self.forget_file.is_file() else []

    def cover_names(self) -> list[str]:
        """Which people on the forget list are cover people ([] when none were removed)."""
        return read_name_list(self.cover_file) if self.cover_file.is_file() else []

    def summary(self) -> dict[str, Any]:
        """The public summary, read from `summary_file`."""
        return read_summary(self.root)

    def report_settings(self) -> dict[str, Any]:
        """The settings the run's evaluation recorded (`private/report/report.json`), or {} without one."""
        from .evaluation.report import REPORT_JSON

        path = self.report_dir / REPORT_JSON
        return json.loads(path.read_text(encoding="utf-8")).get("settings", {}) if path.is_file() else {}

    def photo_split(self) -> dict[str, Any] | None:
        """The run's photo split {"trigger": {name: [idx]}, "eval": {name: [idx]}}, or None when it saved none."""
        if not self.photo_split_file.is_file():
            return None
        split = json.loads(self.photo_split_file.read_text(encoding="utf-8"))
        if not isinstance(split.get("eval"), dict):
            raise ValueError(f"{str(self.photo_split_file)!r} is not a photo split (no 'eval' mapping)")
        return {"trigger": split.get("trigger", {}), "eval": split["eval"]}
