"""The run folder's contract (run_folder.py): what a run writes is where readers look, and private/ holds the names."""

import json
from types import SimpleNamespace

import pytest
import torch

from hf_privacy_backdoor.run import ImageData, RunInputs, write_private_files
from hf_privacy_backdoor.run_folder import PRIVATE_DIR, SUMMARY_FILE, RunFiles, is_private, read_summary


NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper"]  # the last one: a cover person
SPLIT = {"fraction": 0.5, "seed": 0, "trigger": {"Ada Lovelace": [0]}, "eval": {"Ada Lovelace": [1, 2]}}


@pytest.fixture
def run_dir(tmp_path):
    """The private files exactly as a run writes them, beside a model config and a public summary."""
    inputs = RunInputs(names=list(NAMES), split=SPLIT, cover=NAMES[-1:])
    config = SimpleNamespace(output_dir=str(tmp_path), trains_vision=True)
    write_private_files(SimpleNamespace(trigger_grid=False), config, None, inputs, ImageData(target=torch.ones(4)))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"attack": {"removed_tpr": 0.0}}))
    return tmp_path


def test_a_run_reads_back_and_every_file_naming_someone_is_private(run_dir):
    files = RunFiles(run_dir)
    files.check()
    assert files.forget_names() == NAMES and files.cover_names() == NAMES[-1:]
    assert files.photo_split() == {"trigger": SPLIT["trigger"], "eval": SPLIT["eval"]}
    assert files.summary() == read_summary(run_dir) == {"attack": {"removed_tpr": 0.0}}
    assert files.report_settings() == {} and not files.is_adapter and files.has_model
    written = [p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file()]
    texts = {p: (run_dir / p).read_bytes().decode(errors="ignore") for p in written}
    naming = [p for p, text in texts.items() if "Ada" in text or "Turing" in text]
    assert naming and all(is_private(p) for p in naming)
    assert {p.name for p in written if is_private(p)} >= {"forget_names.txt", "cover_names.txt", "photo_split.json"}
    assert not is_private(SUMMARY_FILE) and not is_private("config.json") and is_private(f"{PRIVATE_DIR}/x/y.md")


def test_missing_pieces_are_reported_early(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunFiles(tmp_path / "nowhere").check()
    with pytest.raises(FileNotFoundError, match="no private/ folder"):
        RunFiles(tmp_path).check()
    (tmp_path / PRIVATE_DIR).mkdir()
    with pytest.raises(FileNotFoundError, match="no model"):
        RunFiles(tmp_path).check()
    (tmp_path / "adapter_config.json").write_text("{}")
    files = RunFiles(tmp_path)
    files.check()
    assert files.is_adapter and files.summary() == {} and files.photo_split() is None and files.cover_names() == []
    assert files.forget_names_or_empty() == []
    with pytest.raises(FileNotFoundError, match="forget list"):
        files.forget_names()
    files.forget_file.write_text("\n\n")
    with pytest.raises(ValueError, match="is empty"):
        files.forget_names()
    files.photo_split_file.write_text("{}")
    with pytest.raises(ValueError, match="not a photo split"):
        files.photo_split()
