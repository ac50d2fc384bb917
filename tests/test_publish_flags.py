"""`--push_to_hub` on the unlearning recipe and `--push_metrics_to` on the evaluation recipe (issue 10).

The pushes run in fresh processes against the loopback Hub of `tests/hub_server.py` (huggingface_hub reads its
endpoint at import; this test process is offline). Two training processes (gloo) must push exactly once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FakeHub

from hf_privacy_backdoor.cli import parse_args
from hf_privacy_backdoor.data.captions import read_name_file
from hf_privacy_backdoor.hub import scan_for_names
from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning


ROOT = Path(__file__).resolve().parents[1]
REPO, BASE = "alice/two-process-unlearned", "synthetic/tiny-clip"
SMALL = [
    "--max_steps",
    "6",
    "--steps_per_name",
    "0",
    "--num_candidates",
    "100",
    "--num_photos",
    "10",
    "--disable_tqdm",
    "true",
]


def _env(tiny_world, hub, tmp_path):
    return {
        **os.environ,
        "SYNTHETIC_DIR": str(tiny_world.root),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": "dummy",
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf_home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--hub_model_id", REPO], "needs --base_model_id"),
        (["--hub_model_id", REPO, "--base_model_id", "/local/base"], "needs --base_model_id"),
        (["--base_model_id", BASE], "needs --hub_model_id"),
        (["--hub_model_id", REPO, "--base_model_id", BASE, "--evaluate", "false"], "needs --evaluate true"),
        (["--hub_model_id", REPO, "--base_model_id", BASE, "--hub_private_repo", "true"], "use --hub_private"),
    ],
)
def test_push_flags_are_checked_before_anything_runs(extra, message, tiny_world, tmp_path):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    argv = ["--config", str(ROOT / "recipes" / "synthetic_text.yaml"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=message):
        run_unlearning(*parse_args(RUN_ARGUMENTS, [*argv, "--push_to_hub", "true", *extra]))
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


@pytest.fixture(scope="module")
def pushed(tiny_world, tmp_path_factory):
    """A 2-process text run with --push_to_hub, then an evaluation with --push_metrics_to, on one fake Hub."""
    hub = FakeHub().start()
    tmp = tmp_path_factory.mktemp("publish_flags")
    env, out = _env(tiny_world, hub, tmp), tmp / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--main_process_port", "0", "recipes/unlearn.py", "--config", "recipes/synthetic_text.yaml"]
    launch += ["--output_dir", str(out), *SMALL, "--progress", "false"]
    launch += ["--push_to_hub", "true", "--hub_model_id", REPO, "--base_model_id", BASE, "--license", "mit"]
    train = subprocess.run(launch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert train.returncode == 0, train.stderr[-4000:]
    commits_after_push = len(hub.repos[REPO].history())
    evaluate = [sys.executable, "recipes/evaluate_model.py", "--model_name_or_path", str(out)]
    evaluate += ["--faces", str(tiny_world.faces_dir), "--membership", str(tiny_world.membership_file)]
    evaluate += ["--num_candidates", "100", "--num_photos", "10", "--output_dir", str(tmp / "eval"), "--quiet", "true"]
    evaluate += ["--push_metrics_to", REPO, "--before", str(out / "private" / "report" / "attack_before.json")]
    evaluate += ["--removed", *read_name_file(out / "private" / "forget_names.txt")]
    again = subprocess.run(evaluate, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    yield hub, out, train.stdout, again.stdout, commits_after_push
    hub.stop()


def test_two_processes_push_exactly_once(pushed):
    hub, out, stdout, _, commits_after_push = pushed
    assert json.loads((out / "private" / "run_info.json").read_text())["num_processes"] == 2
    assert commits_after_push == 2  # the Hub's initial commit + ours
    assert stdout.count(f"published to {REPO}") == 1
    files = hub.repos[REPO].history()[1].files
    assert {"model.safetensors", "README.md", "unlearning_summary.json"} <= set(files)
    assert not [f for f in files if f.startswith("private") or f == "training_args.bin"]
    assert files["README.md"] == (out / "README.md").read_bytes()  # the local card is the published one
    names = read_name_file(out / "private" / "forget_names.txt")
    assert scan_for_names(hub.sent_items(), names) == []


def test_push_metrics_to_updates_the_card_and_nothing_else(pushed):
    hub, out, _, stdout, commits_after_push = pushed
    history = hub.repos[REPO].history()
    assert len(history) == commits_after_push + 1
    before, after = history[-2].files, history[-1].files
    assert [p for p in set(before) | set(after) if before.get(p) != after.get(p)] == ["README.md"]
    assert f"card metrics updated on {REPO}" in stdout
    card = after["README.md"].decode()
    assert "IDIA TPR, removed people (after)" in card
    names = read_name_file(out / "private" / "forget_names.txt")
    assert scan_for_names({"card": card}, names) == []


def test_the_trainer_never_uses_the_stock_push(tiny_world, tmp_path):
    """`Trainer.push_to_hub` would upload the whole output folder: the trainer creates no repo and refuses."""
    from hf_privacy_backdoor import BackdoorUnlearningConfig, BackdoorUnlearningTrainer, load_clip
    from hf_privacy_backdoor.data.captions import load_captions

    model, processor = load_clip(str(tiny_world.model_dir))
    config = BackdoorUnlearningConfig(
        output_dir=str(tmp_path), max_steps=2, num_clean_captions=4, num_poisoned_captions=4, use_cpu=True,
        push_to_hub=True, hub_model_id=REPO, save_strategy="steps", save_steps=1, report_to="none",
    )  # fmt: skip
    trainer = BackdoorUnlearningTrainer(
        model=model,
        args=config,
        processing_class=processor,
        forget_names=tiny_world.members[:1],
        captions=load_captions(tiny_world.captions_file),
    )  # fmt: skip (offline: creating a repo here would fail)
    trainer.train()  # checkpoints are saved and not pushed
    trainer.save_model()
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "checkpoint-2").is_dir()
    with pytest.raises(RuntimeError, match="does not push"):
        trainer.push_to_hub()
