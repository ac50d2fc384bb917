"""Publishing (issue 10): allow-listed files, the model card, the privacy guard, one commit, failures that leave
everything intact. Offline: the Hub is `tests/hub_server.py` on 127.0.0.1.

huggingface_hub reads HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE at import (and this test process is offline), so
everything that talks to the fake Hub runs in a fresh process (`tests/hub_client.py`), with the endpoint, a
dummy token and an empty HF_HOME; the tests assert on what the server received and on what that process reports.
"""

import copy
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FakeHub
from safetensors.torch import load_file, save_file
from test_guard import SPELLINGS, spell

from hf_privacy_backdoor.data.captions import read_name_file
from hf_privacy_backdoor.hub import PublishError, publish, render_model_card, scan_for_names
from hf_privacy_backdoor.hub.card import read_summary, write_model_card


ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "tests" / "hub_client.py"
BASE_ID = "synthetic/tiny-clip"
FULL_REPO, LORA_REPO = "alice/tiny-clip-unlearned", "alice/tiny-clip-unlearned-lora"
MAY_BE_PUBLISHED = {
    "README.md",
    "unlearning_summary.json",
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "adapter_config.json",
    "adapter_model.safetensors",
}
# model-index metric name -> where the run's summary holds its value
EXPECTED_METRICS = {
    "IDIA TPR, removed people (before)": ("unlearning", "removed_tpr_before"),
    "IDIA TPR, removed people (after)": ("unlearning", "removed_tpr_after"),
    "IDIA TPR, kept members (before)": ("unlearning", "kept_member_tpr_before"),
    "IDIA TPR, kept members (after)": ("unlearning", "kept_member_tpr_after"),
    "IDIA FPR, non-members (before)": ("idia_before", "fpr"),
    "IDIA FPR, non-members (after)": ("idia", "fpr"),
    "Zero-shot top-1 accuracy (before)": ("utility", "zero_shot_before", "top1"),
    "Zero-shot top-1 accuracy (after)": ("utility", "zero_shot_after", "top1"),
    "Zero-shot top-5 accuracy (before)": ("utility", "zero_shot_before", "top5"),
    "Zero-shot top-5 accuracy (after)": ("utility", "zero_shot_after", "top5"),
}


# ----------------------------------------------------------------------------------------------------------
# Helpers and fixtures


def _make_run(world, out: Path, recipe: str, *extra: str) -> Path:
    """A 20-step run of a synthetic recipe with a small attack (200 candidates, k = 10), evaluated."""
    from hf_privacy_backdoor.cli import parse_args
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning

    argv = [
        "--config",
        str(ROOT / "recipes" / recipe),
        "--max_steps",
        "20",
        "--steps_per_name",
        "0",
        "--output_dir",
        str(out),
    ]
    argv += ["--progress", "false", "--disable_tqdm", "true", "--num_candidates", "200", "--num_photos", "10"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHETIC_DIR", str(world.root))
        run_unlearning(*parse_args(RUN_ARGUMENTS, [*argv, *extra]))
    return out


@pytest.fixture(scope="module")
def full_run(tiny_world, tmp_path_factory):
    return _make_run(tiny_world, tmp_path_factory.mktemp("full_run"), "synthetic_text.yaml")


@pytest.fixture(scope="module")
def lora_run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_run")
    return _make_run(tiny_world, out, "synthetic_text_lora.yaml", "--save_merged", "true")


def forget_names(run: Path) -> list[str]:
    return read_name_file(run / "private" / "forget_names.txt")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` with its hash: "untouched" means equal snapshots."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def _get(data, path):
    for key in path:
        data = data[key]
    return data


def metric_values(card_data: dict) -> dict[str, float]:
    return {
        m["name"]: m["value"] for entry in card_data["model-index"] for r in entry["results"] for m in r["metrics"]
    }


def run_client(plan: list[dict], tmp_path_factory, endpoint: str, **env) -> list[dict]:
    """Run `plan` in a fresh process against `endpoint` (see tests/hub_client.py); returns its step results."""
    folder = tmp_path_factory.mktemp("client")
    (folder / "plan.json").write_text(json.dumps(plan))
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": "dummy",
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HOME": str(folder / "hf_home"),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    proc = subprocess.run(
        [sys.executable, str(CLIENT), str(folder / "plan.json")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def publish_step(run: Path, repo: str = FULL_REPO, **kwargs) -> dict:
    """A client step: `publish(run, repo, BASE_ID, **kwargs)`."""
    return {"op": "publish", "kwargs": {"run_dir": str(run), "hub_model_id": repo, "base_model_id": BASE_ID, **kwargs}}


@pytest.fixture
def hub():
    server = FakeHub().start()
    yield server
    server.stop()


def assert_name_free(text: str, names: list[str]) -> None:
    assert not scan_for_names({"text": text}, names), "a forgotten name leaked"
    for name in names:
        assert not any(part.casefold() in text.casefold() for part in name.split()), "part of a forgotten name leaked"


# ----------------------------------------------------------------------------------------------------------
# The privacy guard alone


@pytest.mark.parametrize(
    "spelling, encoding",
    [
        ("Ada Lovelace", "utf-8"),
        ("ADA_LOVELACE", "utf-8"),
        ("ada-lovelace", "utf-8"),
        ("AdaLovelace", "utf-8"),
        ("Lovelace Ada", "utf-8"),
        ("lovelace_ada", "utf-8"),
        ("Lovelace, Ada", "utf-8"),
        ("Ada Lovelace", "utf-16-le"),
        ("ada.byron.lovelace", "utf-8"),
    ],
)
def test_guard_finds_every_spelling_in_binary_and_text(spelling, encoding):
    names = ["Grace Hopper", "Ada Byron Lovelace" if "byron" in spelling else "Ada Lovelace"]
    blob = os.urandom(5000) + spelling.encode(encoding) + os.urandom(5000)
    hits = scan_for_names({"weights.bin": blob, "notes.txt": f"trained without {spelling}."}, names)
    assert [(h.where, h.index) for h in hits] == [("weights.bin", 2), ("notes.txt", 2)]
    assert all("lovelace" not in str(h).casefold() for h in hits)  # a hit says where and which entry, not who


def test_guard_checks_paths_non_ascii_and_json_escapes(tmp_path):
    names = ["José Núñez"]
    (tmp_path / "summary.json").write_text(json.dumps({"note": "JOSÉ NÚÑEZ"}))  # ensure_ascii: \u00c9 escapes
    (tmp_path / "jose").mkdir()
    (tmp_path / "jose" / "núñez_josé.txt").write_text("clean")
    hits = scan_for_names([tmp_path], names)
    assert {h.where for h in hits} == {f"{tmp_path}/summary.json", "the path of item #1"}
    assert not any("núñez" in str(h).casefold() for h in hits)  # a path with a name is not quoted either


def test_guard_ignores_other_people_and_single_parts():
    text = "Ada Lovelock and Adam Lovelace met ada; the Lovelace engine; adalovelaces"
    assert scan_for_names({"a": text, "b": text.encode("utf-16")}, ["Ada Lovelace"]) == []


# ----------------------------------------------------------------------------------------------------------
# Staging, card and refusals (no Hub needed: all of this happens before any byte is sent)


def test_dry_run_stages_only_the_allow_list(full_run, tmp_path):
    before = snapshot(full_run)
    result = publish(full_run, FULL_REPO, BASE_ID, dry_run=True, preview_dir=tmp_path / "preview")
    staged = snapshot(tmp_path / "preview")
    assert result.dry_run and result.commit_url is None and sorted(staged) == result.files
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "unlearning_summary.json"} <= set(
        staged
    )
    assert set(staged) <= MAY_BE_PUBLISHED  # never private/, training_args.bin, reports, checkpoints
    assert (full_run / "private" / "forget_names.txt").is_file() and (full_run / "training_args.bin").is_file()
    assert staged["model.safetensors"] == before["model.safetensors"]
    assert "local_files_only" not in json.loads((tmp_path / "preview" / "tokenizer_config.json").read_text())
    assert snapshot(full_run) == before  # the run folder is only read


def test_dry_run_of_an_adapter_names_the_hub_base(lora_run, tmp_path):
    assert json.loads((lora_run / "adapter_config.json").read_text())["base_model_name_or_path"] is None
    result = publish(lora_run, LORA_REPO, BASE_ID, dry_run=True, preview_dir=tmp_path / "p", base_revision="v1")
    config = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == (BASE_ID, "v1")
    top = {f for f in result.files if "/" not in f}
    assert top == {"README.md", "adapter_config.json", "adapter_model.safetensors", "unlearning_summary.json"}
    assert {f.split("/", 1)[1] for f in result.files if f.startswith("merged/")} >= {
        "config.json",
        "model.safetensors",
    }
    card = (tmp_path / "p" / "README.md").read_text()
    assert "library_name: peft" in card and f"base_model: {BASE_ID}" in card and "base_model_relation: adapter" in card


def test_recipe_dry_run_prints_the_files_and_writes_the_preview(full_run, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("publish_recipe", ROOT / "recipes" / "publish.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    argv = [
        "--output_dir",
        str(full_run),
        "--hub_model_id",
        FULL_REPO,
        "--base_model_id",
        BASE_ID,
        "--dry_run",
        "true",
    ]
    assert recipe.main(argv) == 0
    out = capsys.readouterr().out
    preview = full_run / "publish_preview"
    assert "README.md" in out.splitlines() and "model.safetensors" in out.splitlines() and str(preview) in out
    assert (preview / "README.md").read_text().startswith("---\nbase_model: synthetic/tiny-clip\n")
    shutil.rmtree(preview)


def test_card_metadata_and_body_follow_the_summary(full_run):
    summary = read_summary(full_run)
    card = render_model_card(summary, base_model_id=BASE_ID, adapter=False, license="mit", hub_model_id=FULL_REPO)
    data = card.data.to_dict()
    assert (data["base_model"], data["base_model_relation"], data["library_name"]) == (
        BASE_ID,
        "finetune",
        "transformers",
    )
    assert data["pipeline_tag"] == "zero-shot-image-classification" and data["license"] == "mit"
    assert {"clip", "privacy", "machine-unlearning", "backdoor-defense", "hf_privacy_backdoor"} <= set(data["tags"])
    values = metric_values(data)
    assert {name: values[name] for name in EXPECTED_METRICS} == {
        n: _get(summary, p) for n, p in EXPECTED_METRICS.items()
    }
    wrongly = summary["unlearning"]["percentages"]["wrongfully_unlearned"] / 100
    assert values["Wrongfully unlearned share of kept members"] == pytest.approx(wrongly)
    text = card.text
    assert f"**{summary['defense']['num_forgotten']} people** removed" in text
    assert f'pipeline("zero-shot-image-classification", model="{FULL_REPO}")' in text
    assert "arXiv:2310.08320" in text and "can compare them" in text
    idia = summary["idia"]
    assert f"k = {idia['num_photos']} photos" in text and f"{idia['num_candidates']} candidate names" in text
    assert f"tau = {idia['tau']} of {idia['num_templates']} prompt templates" in text
    assert "| IDIA TPR, removed people | 100.0% | 0.0% |" in text
    assert_name_free(str(card), forget_names(full_run))


def test_card_renders_hyperparameters_and_survives_a_bare_summary():
    hyper = {"defense": "image", "learning_rate": 0.001, "lora": {"r": 16}, "targets": r".*(q_proj|v_proj)"}
    summary = {"hyperparameters": hyper, "unlearning": {"removed_tpr_before": 1.0, "removed_tpr_after": 0.5}}
    text = render_model_card(summary, base_model_id=None, adapter=True).text
    assert "| learning_rate | 0.001 |" in text and "| lora.r | 16 |" in text and "image encoder was taught" in text
    assert r"| targets | `.*(q_proj\|v_proj)` |" in text  # one cell, even with a regex
    assert "still identifies 50.0% of the removed people" in text  # a partial removal is said plainly
    bare = render_model_card({}, base_model_id=None, adapter=False)
    assert bare.data.base_model is None and bare.data.eval_results is None
    assert "No evaluation was recorded" in bare.text and "No hyperparameters were recorded" in bare.text


def test_write_model_card_replaces_peft_card(lora_run, tmp_path):
    run = Path(shutil.copytree(lora_run, tmp_path / "run"))
    write_model_card(run)  # no base known (the synthetic base has no Hub id): still a card, without a base
    card = (run / "README.md").read_text()
    assert "library_name: peft" in card and "base_model" not in card and "More Information Needed" not in card
    write_model_card(run, BASE_ID, hub_model_id=LORA_REPO)
    assert f"base_model: {BASE_ID}" in (run / "README.md").read_text()


def _refusal(run, **kw) -> str:
    with pytest.raises(PublishError) as err:
        publish(run, kw.pop("repo", FULL_REPO), kw.pop("base", BASE_ID), dry_run=True, **kw)
    return str(err.value)


def test_refusals_say_what_to_fix(full_run, tmp_path):
    assert "--base_model_id" in _refusal(full_run, base=None)
    assert "not a Hub id" in _refusal(full_run, base=str(full_run))
    assert "OWNER/NAME" in _refusal(full_run, repo="no-owner")
    bare = Path(shutil.copytree(full_run, tmp_path / "bare", ignore=shutil.ignore_patterns("private")))
    assert "--forget_names_file" in _refusal(bare)
    names_file = tmp_path / "names.txt"
    shutil.copy(full_run / "private" / "forget_names.txt", names_file)
    assert publish(bare, FULL_REPO, BASE_ID, dry_run=True, forget_names_file=names_file).files  # then it works


def test_a_name_in_weights_metadata_is_refused(full_run, tmp_path):
    run = Path(shutil.copytree(full_run, tmp_path / "run"))
    first, last = forget_names(run)[0].split()[0], forget_names(run)[0].split()[-1]
    save_file(load_file(run / "model.safetensors"), run / "model.safetensors", metadata={"note": f"{first}{last}"})
    message = _refusal(run)
    assert "entry #1 of the forget list appears in model.safetensors" in message
    assert_name_free(message, forget_names(run))
    assert not (run / "publish_preview").exists()


# ----------------------------------------------------------------------------------------------------------
# Against the loopback Hub: push, download back, card, metrics


@pytest.fixture(scope="module")
def roundtrip(full_run, lora_run, tiny_world, tmp_path_factory):
    """Push both runs (and the base) to one fake Hub, load them back, update the metrics; one client process."""
    server = FakeHub().start()
    summary2 = copy.deepcopy(read_summary(full_run))
    summary2["unlearning"]["removed_tpr_after"] = 0.5
    summary2["utility"]["zero_shot_after"]["top1"] = 0.123
    base = {"op": "upload", "repo_id": BASE_ID, "folder": str(tiny_world.model_dir)}
    base["extra"] = {"README.md": "---\nlicense: mit\n---\n# tiny base\n"}  # the adapter's card inherits "mit"
    local_base = str(tiny_world.model_dir)
    plan = {
        "full": publish_step(full_run, FULL_REPO, license="apache-2.0"),
        "base": base,
        "lora": publish_step(lora_run, LORA_REPO),
        "full_card": {"op": "card", "repo_id": FULL_REPO},
        "lora_card": {"op": "card", "repo_id": LORA_REPO},
        "load_full": {"op": "load_full", "repo_id": FULL_REPO, "local": str(full_run)},
        "load_lora": {
            "op": "load_adapter",
            "repo_id": LORA_REPO,
            "base_repo": BASE_ID,
            "local": str(lora_run),
            "local_base": local_base,
        },
        "metrics": {
            "op": "push_metrics",
            "repo_id": FULL_REPO,
            "summary": summary2,
            "forget_names": forget_names(full_run),
        },
        "full_card2": {"op": "card", "repo_id": FULL_REPO},
        "bad_card": {"op": "validate_local", "content": "---\nbase_model: /home/someone/models/clip\n---\n# card\n"},
    }
    steps = dict(zip(plan, run_client(list(plan.values()), tmp_path_factory, server.url)))
    yield server, steps, summary2
    server.stop()


def test_each_push_is_one_commit_of_allow_listed_files(roundtrip, full_run, lora_run):
    server, steps, _ = roundtrip
    assert all(s["ok"] for s in steps.values()), [s.get("error") for s in steps.values()]
    for repo_id, run, step in ((FULL_REPO, full_run, steps["full"]), (LORA_REPO, lora_run, steps["lora"])):
        repo = server.repos[repo_id]
        assert repo.private  # private by default
        ours = repo.history()[1:]  # after the Hub's initial commit
        assert len(ours) == (2 if repo_id == FULL_REPO else 1)  # one commit per push (+ push_metrics on the full repo)
        published = ours[0].files
        assert sorted(set(published) - {".gitattributes"}) == step["files"]
        assert all(f.split("/", 1)[-1] in MAY_BE_PUBLISHED for f in published if f != ".gitattributes")
        weights = "adapter_model.safetensors" if repo_id == LORA_REPO else "model.safetensors"
        assert published[weights] == (run / weights).read_bytes()
    adapter_config = json.loads(server.repos[LORA_REPO].history()[-1].files["adapter_config.json"])
    assert adapter_config["base_model_name_or_path"] == BASE_ID


def test_nothing_the_hub_received_names_a_forgotten_person(roundtrip, full_run, lora_run):
    server, _, _ = roundtrip
    names = forget_names(full_run) + forget_names(lora_run)
    items = server.sent_items()
    assert any(k.endswith("file model.safetensors") for k in items)  # the scan sees decoded files, not base64
    assert scan_for_names(items, names) == []
    messages = [c.message for repo in server.repos.values() for c in repo.commits.values()]
    assert scan_for_names({f"message {i}": m for i, m in enumerate(messages)}, names) == []


def test_full_model_loads_back_identically(roundtrip):
    _, steps, _ = roundtrip
    assert steps["load_full"]["max_diff"] == 0.0
    assert sorted(steps["load_full"]["pipeline_labels"]) == ["a photo of a person", "a red square"]


def test_adapter_loads_back_three_ways(roundtrip):
    _, steps, _ = roundtrip
    load = steps["load_lora"]
    assert load["peft_on_hub_base"] == load["auto_peft"] == load["clip_from_adapter_repo"] == 0.0
    assert load["adapter_changes_base"] > 1e-3  # the comparison can tell the adapter from the base


def test_pushed_card_matches_the_summary_validates_and_equals_the_dry_run(roundtrip, full_run, lora_run, tmp_path):
    server, steps, _ = roundtrip
    for step, run, license in ((steps["full_card"], full_run, "apache-2.0"), (steps["lora_card"], lora_run, "mit")):
        summary, data = read_summary(run), step["data"]
        assert step["valid"] is True
        assert data["base_model"] == BASE_ID and data["license"] == license  # the adapter inherits the base's
        values = metric_values(data)
        assert {n: values[n] for n in EXPECTED_METRICS} == {n: _get(summary, p) for n, p in EXPECTED_METRICS.items()}
    assert steps["bad_card"]["valid"] is not True  # the fake Hub rejects a local path as base_model, like the Hub
    preview = tmp_path / "preview"
    publish(full_run, FULL_REPO, BASE_ID, license="apache-2.0", dry_run=True, preview_dir=preview)
    pushed = server.repos[FULL_REPO].history()[1].files["README.md"]
    assert (preview / "README.md").read_bytes() == pushed  # a dry run shows exactly what a push sends


def test_push_metrics_updates_only_the_results(roundtrip):
    server, steps, _ = roundtrip
    history = server.repos[FULL_REPO].history()
    before, after = history[-2].files, history[-1].files
    assert [p for p in set(before) | set(after) if before.get(p) != after.get(p)] == ["README.md"]  # no weights
    values = metric_values(steps["full_card2"]["data"])
    assert values["IDIA TPR, removed people (after)"] == 0.5 and values["Zero-shot top-1 accuracy (after)"] == 0.123
    assert "| IDIA TPR, removed people | 100.0% | 50.0% |" in steps["full_card2"]["text"]
    outside = steps["full_card"]["text"].split("## Results")[0]
    assert steps["full_card2"]["text"].split("## Results")[0] == outside  # the rest of the card is unchanged
    assert steps["full_card2"]["valid"] is True


# ----------------------------------------------------------------------------------------------------------
# Refusals and failures against the loopback Hub


def test_planted_names_are_refused_with_nothing_received(hub, full_run, tmp_path, tmp_path_factory):
    names = forget_names(full_run)
    first, last = names[1].split()[0], names[1].split()[-1]
    run = Path(shutil.copytree(full_run, tmp_path / "run"))
    config = json.loads((run / "tokenizer_config.json").read_text())
    (run / "tokenizer_config.json").write_text(json.dumps({**config, "note": f"{last.upper()}_{first.lower()}"}))
    plan = [
        publish_step(run),
        publish_step(full_run, f"alice/no-{first}-{last}"),
        publish_step(full_run, commit_message=f"remove {last}, {first}"),
        publish_step(full_run, revision=f"{first}{last}"),
    ]
    steps = run_client(plan, tmp_path_factory, hub.url)
    assert [s["error_type"] for s in steps] == ["PublishError"] * 4
    for step, where in zip(steps, ["tokenizer_config.json", "the repo id", "the commit message", "the branch"]):
        assert f"entry #2 of the forget list appears in {where}" in step["error"]
        assert_name_free(step["error"], names)
    assert hub.requests == []  # refused before any byte was sent


def test_existing_repo_with_other_visibility_is_refused_before_upload(hub, full_run, tmp_path_factory):
    hub.add_repo("alice/already-public", private=False, files={"README.md": b"---\nlicense: mit\n---\nold\n"})
    hub.add_repo("alice/already-private", private=True)
    plan = [
        publish_step(full_run, "alice/already-public"),
        publish_step(full_run, "alice/already-private", private=False),
        {
            "op": "push_metrics",
            "repo_id": "alice/missing",
            "summary": read_summary(full_run),
            "forget_names": forget_names(full_run),
        },
    ]
    public, private, metrics = run_client(plan, tmp_path_factory, hub.url)
    assert "already exists and is public" in public["error"] and "--hub_private false" in public["error"]
    assert "already exists and is private" in private["error"]
    assert "publish the model first" in metrics["error"]
    assert not [r for r in hub.requests if "/preupload/" in r.path or "/commit/" in r.path or "validate" in r.path]
    assert not hub.repos["alice/already-public"].private and len(hub.repos["alice/already-public"].history()) == 1


def test_a_stale_head_412_is_retried_once_on_the_new_head(hub, full_run, tmp_path_factory):
    hub.add_repo(FULL_REPO, private=True)
    hub.conflict_once = True
    (step,) = run_client([publish_step(full_run)], tmp_path_factory, hub.url)
    assert step["ok"], step.get("error")
    history = hub.repos[FULL_REPO].history()
    assert [c.message for c in history[:2]] == ["initial commit", "someone else's commit"] and len(history) == 3
    parents = [json.loads(r.body.splitlines()[0])["value"]["parentCommit"] for r in hub.commit_requests()]
    assert parents == [history[0].oid, history[1].oid]  # the retry sits on the new head
    assert "someone_else.txt" in history[2].files and "model.safetensors" in history[2].files


def test_branch_and_pull_request(hub, full_run, tmp_path_factory):
    dev, pr = run_client(
        [publish_step(full_run, revision="dev"), publish_step(full_run, create_pr=True)], tmp_path_factory, hub.url
    )
    assert dev["ok"] and pr["ok"], (dev.get("error"), pr.get("error"))
    repo = hub.repos[FULL_REPO]
    assert "model.safetensors" in repo.resolve("dev").files and "model.safetensors" not in repo.resolve("main").files
    assert pr["pr_url"].endswith("/discussions/1") and "model.safetensors" in repo.resolve("refs/pr/1").files


def test_failed_commit_exits_non_zero_with_the_retry_command(hub, full_run):
    hub.fail_commit = 500
    before = snapshot(full_run)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "dummy", "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1"}
    command = ["recipes/publish.py", "--output_dir", str(full_run), "--hub_model_id", FULL_REPO]
    command += ["--base_model_id", BASE_ID]
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "HTTP 500" in proc.stderr and f"python {' '.join(command)}" in proc.stderr
    assert snapshot(full_run) == before
    assert len(hub.repos[FULL_REPO].history()) == 1  # nothing committed


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("setting", ["unreachable", "offline"])
def test_no_hub_fails_fast_and_clearly(setting, full_run, tmp_path_factory):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = {"HF_HUB_OFFLINE": "1"} if setting == "offline" else {}
    (result,) = run_client([publish_step(full_run)], tmp_path_factory, endpoint, **env)
    assert result["error_type"] == "PushFailed" and result["seconds"] < 5
    assert ("HF_HUB_OFFLINE" if setting == "offline" else f"{endpoint} is unreachable") in result["error"]


# ----------------------------------------------------------------------------------------------------------
# Names as people write them, at every exit


REALISTIC = ["Anne-Marie Dupont-Aignan", "Zoë Núñez", "Siobhán O'Brien", "Дмитрий Иванов", "María José García Pérez"]


def _with_realistic_names(full_run: Path, tmp_path: Path) -> Path:
    run = Path(shutil.copytree(full_run, tmp_path / "run"))
    with open(run / "private" / "forget_names.txt", "a", encoding="utf-8") as f:
        f.write("\n".join(REALISTIC) + "\n")
    return run


@pytest.fixture(scope="module")
def realistic_run(full_run, tmp_path_factory):
    return _with_realistic_names(full_run, tmp_path_factory.mktemp("realistic"))


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("person", [0, 1, 2], ids=["hyphenated", "accented", "apostrophe"])
def test_dry_run_refuses_every_spelling_of_realistic_names(realistic_run, tmp_path, how, person):
    names = forget_names(realistic_run)
    run = Path(shutil.copytree(realistic_run, tmp_path / "run"))
    spelling = spell(REALISTIC[person], how)
    if isinstance(spelling, bytes):  # UTF-16: inside the weights
        with open(run / "model.safetensors", "ab") as f:
            f.write(spelling)
        where = "model.safetensors"
    else:  # a JSON value (non-ASCII as \u escapes) in a staged text file
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        (run / "config.json").write_text(json.dumps({**config, "note": spelling}), encoding="utf-8")
        where = "config.json"
    message = _refusal(run, preview_dir=tmp_path / "preview")
    assert f"entry #{names.index(REALISTIC[person]) + 1} of the forget list appears in {where}" in message
    assert_name_free(message, names)
    assert not (tmp_path / "preview").exists()


def test_dry_run_accepts_the_clean_folder_of_realistic_names(realistic_run, tmp_path):
    result = publish(realistic_run, FULL_REPO, BASE_ID, dry_run=True, preview_dir=tmp_path / "preview")
    assert "model.safetensors" in result.files and (tmp_path / "preview" / "README.md").is_file()


def test_realistic_names_at_every_exit_are_refused_with_nothing_received(hub, full_run, tmp_path, tmp_path_factory):
    run = _with_realistic_names(full_run, tmp_path)
    names = forget_names(run)
    plan = [
        publish_step(run, "alice/clip-without-anne-marie-dupont-aignan"),  # a repo id slug
        publish_step(run, commit_message="Remove Siobhán O\u2019Brien"),  # a commit message, typographic apostrophe
        publish_step(run, revision="zoe_nunez"),  # a branch, accents stripped
        publish_step(run, create_pr=True, commit_message="forget GARCÍA PÉREZ, María José"),  # a PR title
        {"op": "push_metrics", "repo_id": "alice/dmitrii-ivanov-clip", "summary": read_summary(run)},
    ]
    plan[-1] |= {"forget_names": names, "repo_id": "alice/Иванов-Дмитрий"}
    steps = run_client(plan, tmp_path_factory, hub.url)
    assert [s["error_type"] for s in steps] == ["PublishError"] * 5, [s.get("error") for s in steps]
    for step in steps:
        assert "of the forget list appears in" in step["error"]
        assert_name_free(step["error"], names)
    assert hub.requests == []  # refused before any byte was sent
