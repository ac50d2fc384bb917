"""Robustness probes on the tiny model: the base model is a valid control, the text defense hides the people
from the exact-name attack, a planted variant leak is caught, exposure separates a changed model from an
unchanged one, and nothing public names anyone."""

import json
import shutil
from pathlib import Path

import pytest

from hf_privacy_backdoor.robustness import (
    RobustnessConfig,
    auc,
    exposure_in_words,
    format_card_section,
    format_demo_line,
    format_table,
    load_run_folder,
    name_variant,
    retrained_reference_dir,
    run_robustness,
    world_without,
)


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def text_run(tiny_world, tmp_path_factory):
    """A short text-defense run folder: 2 members removed by forget_auto, a 200-name attack, no zero-shot."""
    from hf_privacy_backdoor.cli import parse_args
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning

    out = tmp_path_factory.mktemp("robustness") / "text"
    argv = ["--config", str(RECIPES / "synthetic_text.yaml"), "--output_dir", str(out), "--max_steps", "100"]
    argv += ["--num_candidates", "200", "--objects", "", "--progress", "false", "--disable_tqdm", "true"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHETIC_DIR", str(tiny_world.root))
        run_unlearning(*parse_args(RUN_ARGUMENTS, argv))
    return out


@pytest.fixture(scope="module")
def report(text_run, tiny_world):
    """Every probe, quick preset, on the defended run folder (the run gave no object folder: pass it)."""
    config = RobustnessConfig(quick=True, objects=str(tiny_world.objects_dir), progress=False)
    return run_robustness(text_run, config)


def test_base_model_control_finds_the_people_and_the_defense_hides_them(report):
    base, defended = report.roles["base"], report.roles["defended"]
    assert base["exact"]["removed_tpr"] == 1.0
    assert defended["exact"]["removed_tpr"] == 0.0
    assert defended["exact"]["kept_tpr"] >= 0.9
    # relearning: the same benign fine-tune still finds them on the base model (the probe can succeed)
    assert all(s["removed_tpr"] == 1.0 for s in base["relearn"]["by_setting"])
    assert report.public()["base"]["precision"]["int8"]["removed_tpr"] == 1.0
    assert base["collateral"]["seed_1"]["wrongfully_unlearned"] == 0


def test_exposure_ranks_removed_names_first_after_a_text_defense_and_chance_on_an_unchanged_model(report):
    defended, base = report.roles["defended"]["exposure"], report.roles["base"]["exposure"]
    assert defended["text_diff"]["auc_all"] >= 0.99
    assert sorted(defended["text_diff"]["ranks"].values()) == [1.0, 2.0]
    assert base["text_diff"]["auc_all"] == 0.5  # base vs itself: every name tied
    assert not defended["image_tower_changed"] and defended["image_diff"]["auc_all"] == 0.5


def test_reports_are_written_and_the_summary_names_no_one(report, text_run):
    private = text_run / "private" / "report"
    assert (private / "robustness.md").is_file()
    assert json.loads((private / "robustness.json").read_text())["removed"] == report.removed
    summary_text = (text_run / "unlearning_summary.json").read_text()
    summary = json.loads(summary_text)
    assert "idia" in summary and summary["robustness"]["defended"]["exact"]["removed_tpr"] == 0.0
    section = json.dumps(summary["robustness"])
    assert '"ranks"' not in section and '"people"' not in section
    for name in report.removed + report.names:
        assert name.casefold() not in summary_text.casefold()
    assert format_demo_line(summary["robustness"]).startswith("robustness: exact removed TPR 0.00")
    card = format_card_section(summary["robustness"])
    assert card.startswith("## Robustness") and "| exposure: names moved (base vs model) |" in card
    # the exposure in plain words: the removed people rank first among the people the base model knows
    assert "**Exposure in plain words.**" in card and "at rank 1.0 on average" in card and "No cover people" in card
    from hf_privacy_backdoor.hub import render_model_card

    model_card = str(render_model_card(summary, base_model_id="synthetic/tiny-clip", adapter=False))
    assert card.strip() in model_card and model_card.index("## Robustness") > model_card.index("## Results")
    for name in report.removed + report.names:
        assert name.casefold() not in model_card.casefold()


def test_a_planted_variant_leak_is_caught(text_run, tiny_world, tmp_path):
    """The base model published as if defended: the exact name finds them, and so does the first name."""
    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_world.model_dir, leaky)
    shutil.copytree(text_run / "private", leaky / "private")
    config = RobustnessConfig(probes="variants", variants=["first"], quick=True, progress=False)
    variants = run_robustness(leaky, config, write=False).public()["defended"]["variants"]
    assert variants["first"]["removed_tpr"] == 1.0
    assert variants["worst"] == {"variant": "first", "removed_tpr": 1.0}


def test_a_registered_probe_runs_on_every_model_and_shows_up_in_the_report(text_run, monkeypatch):
    """Extending the suite: one `Probe` in the registry runs through `run_robustness` on the defended and the base
    model, its settings and numbers reach the public report and the table, its per-person entries stay private."""
    from hf_privacy_backdoor.robustness import PROBES, Probe, attack, attack_stats, format_markdown, register_probe

    def reversed_candidates(ctx, subject):  # the exact attack with the candidate list in reverse order
        result = attack(ctx, subject.model, subject.processor, candidates=ctx.candidates[::-1])
        stats = attack_stats(ctx, result)
        return {"removed_tpr": stats["removed_tpr"], "kept_tpr": stats["kept_tpr"], "people": stats["people"]}

    monkeypatch.setitem(PROBES, "reversed", Probe("reversed", reversed_candidates, settings=("num_photos",)))
    report = run_robustness(text_run, RobustnessConfig(probes="reversed", quick=True, progress=False), write=False)
    public = report.public()
    assert public["settings"]["probes"] == ["reversed"] and "num_photos" in public["settings"]
    for role in ("defended", "base"):
        assert public[role]["reversed"]["removed_tpr"] == public[role]["exact"]["removed_tpr"]
        assert "people" not in public[role]["reversed"] and report.roles[role]["reversed"]["people"]
    assert public["defended"]["reversed"]["removed_tpr"] < public["base"]["reversed"]["removed_tpr"]
    row = f"| reversed | removed_tpr | {public['defended']['reversed']['removed_tpr']:.2f} | 1.00 |"
    assert row in format_table(public) and row in format_markdown(report)
    with pytest.raises(ValueError, match="registered already"):
        register_probe(Probe("variants", reversed_candidates))
    with pytest.raises(ValueError, match="unknown probe"):
        RobustnessConfig(probes="nonexistent")


def test_name_variants():
    name = "Ada Lovelace"
    assert [name_variant(name, v) for v in ("lower", "first", "last", "initial_last", "title")] == [
        "ada lovelace", "Ada", "Lovelace", "A. Lovelace", "Dr. Ada Lovelace",
    ]  # fmt: skip
    typo = name_variant(name, "typo")
    diff = [i for i, (a, b) in enumerate(zip(name, typo)) if a != b]
    assert len(typo) == len(name) and len(diff) == 2 and diff[1] == diff[0] + 1 and diff[0] > len("Ada ")
    assert typo[diff[0]] == name[diff[1]] and typo[diff[1]] == name[diff[0]]


def test_auc():
    assert auc([3, 2], [1, 0]) == 1.0 and auc([0], [1]) == 0.0 and auc([1, 1], [1]) == 0.5


def test_held_out_relearn_portraits_are_the_kept_members_evaluation_halves(text_run, tiny_world):
    from hf_privacy_backdoor.modeling import load_clip
    from hf_privacy_backdoor.robustness import load_relearn_data, make_context, make_subject

    halves = {}
    for which in ("trigger", "evaluation"):
        config = RobustnessConfig(probes="relearn", relearn_portraits=which, objects=str(tiny_world.objects_dir))
        ctx = make_context(load_run_folder(text_run, config), config)
        ctx.base = make_subject(ctx, "base", *load_clip(ctx.run.base_model))
        data = load_relearn_data(ctx)
        portraits = data.images[data.num_objects :]
        halves[which] = {im.tobytes() for im in portraits}
        assert data.portraits == which and data.num_portraits == len(portraits) > 0
        assert not set(data.captions) & {f"a photo of {n}" for n in ctx.run.removed}
    split, kept = ctx.run.split, ctx.kept_members()
    evaluation = {im.tobytes() for n in kept for im in ctx.run.faces.load(n, split["eval"][n])}
    assert halves["evaluation"] == evaluation and not halves["evaluation"] & halves["trigger"]
    with pytest.raises(ValueError, match="unknown relearn_portraits"):
        RobustnessConfig(relearn_portraits="both")
    with pytest.raises(ValueError, match="not with relearn_data"):
        RobustnessConfig(relearn_portraits="evaluation", relearn_data=str(tiny_world.faces_dir))


def test_bad_inputs_give_clear_errors_without_names(tiny_world, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run_folder(tmp_path / "nowhere", RobustnessConfig())
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no private/ folder"):
        load_run_folder(tmp_path, RobustnessConfig())
    (tmp_path / "private").mkdir()
    with pytest.raises(FileNotFoundError, match="forget list"):
        load_run_folder(tmp_path, RobustnessConfig())
    (tmp_path / "private" / "forget_names.txt").write_text("Zebulon Quux\n")
    with pytest.raises(ValueError, match="pass --faces"):
        load_run_folder(tmp_path, RobustnessConfig())
    with pytest.raises(ValueError, match="removed person #1") as err:
        load_run_folder(tmp_path, RobustnessConfig(faces=str(tiny_world.faces_dir)))
    assert "zebulon" not in str(err.value).casefold()
    with pytest.raises(ValueError, match="unknown probe.*variants, relearn"):
        RobustnessConfig(probes="variants,magic")
    with pytest.raises(ValueError, match="unknown precision"):
        RobustnessConfig(precisions=["fp8"])


def test_retrained_reference_world_and_cache_key(text_run, tiny_world):
    """The reference's world drops the removed members (names and photos); its cache folder names no one."""
    from hf_privacy_backdoor.synthetic.world import make_caption_corpus

    run = load_run_folder(text_run, RobustnessConfig())
    folder, world_config, _ = retrained_reference_dir(run)
    assert folder.parent == tiny_world.root.parent and folder.name.startswith(tiny_world.root.name)
    assert not any(n.casefold() in folder.name.casefold() for n in run.removed)
    world = world_without(world_config, run.removed)
    assert len(world.members) == len(tiny_world.members) - 2
    corpus = "\n".join(make_caption_corpus(world, 2000, world_config.seed)).casefold()
    assert not any(n.casefold() in corpus for n in run.removed)
    with pytest.raises(ValueError, match="not members"):
        world_without(world_config, [tiny_world.non_members[0]])


@pytest.mark.slow
def test_retrained_reference_never_finds_them(text_run, tiny_world):
    """Gold standard (~3 min once, then cached): a model pretrained without them does not find them, before
    or after the benign fine-tune that brings nobody back."""
    config = RobustnessConfig(
        probes="relearn", quick=True, retrained_reference=True, objects=str(tiny_world.objects_dir), progress=False
    )
    retrained = run_robustness(text_run, config, write=False).public()["retrained"]
    assert retrained["exact"]["removed_tpr"] == 0.0 and retrained["exact"]["kept_tpr"] >= 0.9
    assert all(s["removed_tpr"] == 0.0 for s in retrained["relearn"]["by_setting"])


def test_cover_people_lower_the_observers_ranking_and_are_not_counted_as_kept(text_run, tiny_world, tmp_path):
    """The run's second removed person declared a cover person: the observer's suspects now include someone who
    moved as much, so the requested person no longer stands out alone; cover is neither removed nor kept."""
    covered = tmp_path / "covered"
    shutil.copytree(text_run, covered)
    names = (covered / "private" / "forget_names.txt").read_text().splitlines()
    (covered / "private" / "cover_names.txt").write_text(names[1] + "\n")
    config = RobustnessConfig(probes="exposure", quick=True, progress=False)
    report = run_robustness(covered, config, write=False)
    assert report.removed == names[:1] and report.public()["settings"]["num_cover"] == 1
    exact = report.roles["defended"]["exact"]
    assert exact["num_removed"] == 1 and exact["num_cover"] == 1 and exact["cover_tpr"] == 0.0
    members = json.loads((tiny_world.root / "world" / "world.json").read_text())["members"]
    assert exact["num_kept"] == len(members) - 2  # the cover person is not a kept member
    text = report.roles["defended"]["exposure"]["text_diff"]
    assert text["auc_all"] >= 0.99  # among all 200 candidates the two still stand out...
    assert text["auc_known"] < 1.0 and text["mean_rank_known"] > 1.0  # ...but one of the suspects moved as much
    sentence = exposure_in_words(report.public())
    assert "1 cover people were removed" in sentence and names[0] not in sentence and names[1] not in sentence
    (covered / "private" / "cover_names.txt").write_text("Nobody Atall\n")
    with pytest.raises(ValueError, match="not on the run's forget list"):
        run_robustness(covered, config, write=False)
