"""Smoke tests of the benchmark scripts: each runs with `--quick` and writes valid JSON (no timing is asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _json(path):
    data = json.loads(Path(path).read_text())
    assert isinstance(data, dict) and data
    return data


def test_bench_speed_quick_writes_all_modes(tiny_world, tmp_path):
    out = tmp_path / "speed.json"
    report = _load("bench_speed").main(["--quick", "--cases", "text", "--steps", "4", "--output", str(out)])
    data = _json(out)
    assert data == json.loads(json.dumps(report))
    modes = {r["mode"] for r in data["results"]}
    assert modes == {"trainer", "literal", "floor", "student"}
    # same model, data and seed: every mode starts from the same loss
    first = {round(r["first_step_loss"], 4) for r in data["results"]}
    assert len(first) == 1
    assert all(r["s_per_step"] > 0 and r["peak_rss_mb"] > 0 for r in data["results"])


def test_bench_attack_quick_reuses_the_text_table(tiny_world, tmp_path):
    out = tmp_path / "attack.json"
    _load("bench_attack").main(["--quick", "--output", str(out)])
    data = _json(out)
    assert data["results"]["photos"] > 0 and data["results"]["flagged"] >= 0
    reuse = data["image_defense_text_reuse"]
    assert reuse["same_verdicts"] is True


@pytest.mark.slow
def test_bench_grid_quick_writes_json_markdown_and_plot(tiny_world, tmp_path):
    argv = ["--quick", "--workers", "1", "--output_dir", str(tmp_path), "--robustness_probes", "variants,exposure"]
    _load("bench_grid").main(argv)
    data = _json(tmp_path / "grid.json")
    assert data["base_model"]["tpr"] >= 0.9 and len(data["per_cell"]) == 2
    assert {r["removed"] for r in data["aggregated"]} == {1, 2}
    for cell in data["per_cell"]:  # the probes ran on each defended model: a variant TPR and exposure AUCs
        assert 0.0 <= cell["worst_variant_removed_tpr"] <= 1.0
        assert 0.0 <= cell["exposure_text_diff_auc_known"] <= 1.0 and cell["probe_s"] > 0
    text = (tmp_path / "grid.md").read_text()
    assert "removed TPR" in text and "| worst name variant: removed TPR |" in text


def _run_summary(removed_after=0.0, kept_after=1.0, wrongly=0.0, top1=(0.8, 0.7)):
    """A run's public unlearning_summary.json, the parts bench_grid reads."""
    return {
        "unlearning": {
            "removed_tpr_before": 1.0,
            "removed_tpr_after": removed_after,
            "kept_member_tpr_before": 1.0,
            "kept_member_tpr_after": kept_after,
            "percentages": {"wrongfully_unlearned": wrongly, "newly_recalled": 0.0},
        },
        "idia": {"fpr": 0.0},
        "utility": {"zero_shot_before": {"top1": top1[0], "top5": 1.0}, "zero_shot_after": {"top1": top1[1]}},
        "defense": {"steps_trained": 100, "train_seconds": 5.0},
    }


def test_grid_cell_numbers_and_misses_from_a_summary():
    grid = _load("bench_grid")
    summary = _run_summary(removed_after=0.5, kept_after=0.9, wrongly=10.0)
    row = grid.cell_numbers(summary)
    assert len(row["misses"]) == 3  # removed TPR, wrongfully unlearned, top-1 drop of 10 points
    rows = grid.aggregate([{**row, "defense": "text", "removed": 2, "seed": s} for s in (0, 1)])
    assert rows[0]["removed_tpr_after"] == 0.5 and rows[0]["removed_tpr_after_std"] == 0.0
    held = {**row, "removed_tpr_after": 0.0, "wrongfully_unlearned_pct": 0.0, "top1_after": 0.8, "misses": []}
    held |= {"defense": "text", "removed": 2}
    (mixed,) = grid.aggregate([{**row, "defense": "text", "removed": 2, "seed": 0}, {**held, "seed": 1}])
    assert mixed["misses"] == [  # per target: the worst seed's value and how many seeds miss it
        "removed TPR up to 0.500 on 1/2 seeds",
        "wrongfully unlearned % up to 10.0 on 1/2 seeds",
        "top-1 drop (points) up to 10.0 on 1/2 seeds",
    ]


def _grid_part(path, seeds, flags=(), defenses=("text",), recipes=None):
    grid = _load("bench_grid")
    summary = _run_summary(top1=(0.5, 0.45 + 0.01 * len(seeds)))
    cells = [
        {**grid.cell_numbers(summary), "defense": d, "removed": 2, "seed": s, "wall_s": 10.0}
        for d in defenses
        for s in seeds
    ]
    base = {"world": "grid", "members": 96, "non_members": 48, "tpr": 1.0, "fpr": 0.0, "meets_targets": True}
    report = {"base_model": {**base, "attack_s": 10.0 + len(seeds)}, "per_cell": cells, "targets": grid.TARGETS}
    report |= {"wall_s": 100.0, "workers": 1, "recipe_flags": list(flags), "world_config": {}, "pretrain_config": {}}
    if recipes is not None:
        report["recipes"] = recipes
    path.write_text(json.dumps(report))
    return str(path)


def test_bench_grid_refuses_an_unknown_robustness_probe():
    with pytest.raises(SystemExit):
        _load("bench_grid").parse_args(["--robustness_probes", "variants,relearn"])


def test_bench_grid_merge_joins_grids_run_apart_and_refuses_mismatches(tmp_path):
    grid = _load("bench_grid")
    a, b = _grid_part(tmp_path / "a.json", [0]), _grid_part(tmp_path / "b.json", [1, 2])
    report = grid.main(["--merge", a, b, "--output_dir", str(tmp_path / "out"), "--name", "joined"])
    (row,) = report["aggregated"]
    assert row["seeds"] == [0, 1, 2] and report["cells"] == 3 and report["wall_s"] == 200.0
    assert row["misses"] == ["top-1 drop (points) up to 4.0 on 3/3 seeds"]  # the worst seed, and how many miss
    assert _json(tmp_path / "out" / "joined.json")["aggregated"] == report["aggregated"]
    assert "Joined from grids run one after another: a.json (1 cells" in (tmp_path / "out" / "joined.md").read_text()
    with pytest.raises(SystemExit, match=r"cell \('text', 2, 1\) is in both"):
        grid.main(["--merge", b, b, "--output_dir", str(tmp_path / "bad")])
    other = _grid_part(tmp_path / "c.json", [3], flags=["--max_steps", "10"])
    with pytest.raises(SystemExit, match="differ in recipe_flags"):
        grid.main(["--merge", a, other, "--output_dir", str(tmp_path / "bad")])
    # a part whose image cells were rerun with a new recipe: --defenses keeps only its text cells (time scaled)
    mixed = _grid_part(tmp_path / "mixed.json", [5, 6], defenses=("text", "image"), recipes={"image": "old"})
    rerun = _grid_part(tmp_path / "rerun.json", [5, 6], defenses=("image",), recipes={"image": "new"})
    with pytest.raises(SystemExit, match="ran different recipes for image"):
        grid.main(["--merge", mixed, rerun, "--output_dir", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="ran different recipes for image"):  # also when only image cells are kept
        grid.main(["--merge", mixed, rerun, "--defenses", "image", "--output_dir", str(tmp_path / "bad")])
    text_only = grid.main(["--merge", mixed, "--defenses", "text", "--output_dir", str(tmp_path / "t"), "--name", "t"])
    assert [c["defense"] for c in text_only["per_cell"]] == ["text", "text"] and text_only["wall_s"] == 50.0
    assert text_only["merged_from"][0]["cells_left_out"] == 2
    joined = grid.main(["--merge", str(tmp_path / "t" / "t.json"), rerun, "--output_dir", str(tmp_path / "j")])
    assert sorted({c["defense"] for c in joined["per_cell"]}) == ["image", "text"] and joined["wall_s"] == 150.0
    assert joined["recipes"] == {"image": "new"}
    with pytest.raises(SystemExit, match="no cell of the defenses both"):
        grid.main(["--merge", rerun, "--defenses", "both", "--output_dir", str(tmp_path / "bad")])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SystemExit, match="cannot read grid JSON"):
        grid.main(["--merge", a, str(tmp_path / "broken.json"), "--output_dir", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()  # a refused merge writes nothing


def test_word_cache_tokenization_matches_the_tokenizer_on_the_corpus(tiny_world):
    """The per-word id cache of `modeling.tokenize` gives the tokenizer's ids on every training caption."""
    check = _load("check_loss_identity")
    assert check.check_tokenizer(tiny_world) == []


@pytest.mark.slow
def test_bench_synthetic_and_lora_memory_quick(tmp_path):
    _load("bench_synthetic").main(["--quick", "--output", str(tmp_path / "s.json")])
    assert _json(tmp_path / "s.json")["results"]["build_s"] > 0
    _load("bench_lora_memory").main(["--quick", "--output", str(tmp_path / "l.json")])
    assert len(_json(tmp_path / "l.json")["results"]) == 2


@pytest.mark.slow
def test_bench_robustness_quick_writes_json_and_markdown(tiny_world, tmp_path):
    _load("bench_robustness").main(["--quick", "--workers", "1", "--output_dir", str(tmp_path)])
    data = _json(tmp_path / "robustness.json")
    roles = data["per_cell"][0]["roles"]
    assert roles["base"]["exact_removed_tpr"] == 1.0 and roles["defended"]["exact_removed_tpr"] == 0.0
    assert "| text | method | 2 | defended |" in (tmp_path / "robustness.md").read_text()


def test_robustness_misses_and_worst_over_seeds():
    bench = _load("bench_robustness")
    leaky = {"exact_removed_tpr": 0.0, "variant_first_removed_tpr": 0.5, "relearn_0.0001_200_removed_tpr_max": 0.0}
    assert bench.misses(leaky) == ["variant_first 0.50"]
    assert bench.misses({"exact_removed_tpr": 0.0, "collateral_max_pct": 7.9}) == ["collateral 7.9%"]
    cells = [
        {"defense": "image", "setting": "method", "removed": 2, "seed": s, "misses": m, "roles": {"defended": r}}
        for s, (m, r) in enumerate([([], {"exact_removed_tpr": 0.0}), (["exact 0.50"], {"exact_removed_tpr": 0.5})])
    ]
    (row,) = bench.aggregate(cells)
    assert row["exact_removed_tpr_max"] == 0.5 and row["exact_removed_tpr"] == 0.25 and row["seeds"] == [0, 1]
    assert row["misses"] == ["exact up to 0.50 on 1/2 seeds"]
    merged = bench.merge_misses([["relearn_0.0001_200 0.50"], ["collateral 5.3%", "relearn_0.0001_200 1.00"], []])
    assert merged == ["collateral up to 5.3% on 1/3 seeds", "relearn_0.0001_200 up to 1.00 on 2/3 seeds"]


def _square(x):
    return x * x


def test_run_cells_keeps_the_order_and_reports_each_finished_cell(capsys):
    report = _load("_report")
    assert report.run_cells(_square, [3, 1, 2], workers=1, label=lambda c: f"cell {c}") == [9, 1, 4]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" done")[0] for line in lines] == ["[1/3] cell 3", "[2/3] cell 1", "[3/3] cell 2"]
    assert report.run_cells(_square, [2], workers=1) == [4] and capsys.readouterr().out == ""  # no label: quiet


def test_pick_image_target_writes_a_target_farther_from_every_members_name(tiny_world, tiny_clip, tmp_path):
    from hf_privacy_backdoor.data.faces import load_membership
    from hf_privacy_backdoor.data.images import load_target_embedding

    out = tmp_path / "target.safetensors"
    scores = _load("pick_image_target").main(["--world", "default", "--output", str(out)])
    worst, _, members_on_top = scores["picked"]
    assert members_on_top == 0 and worst > scores["centroid"][0]  # a wider margin than the method's centroid
    non_members = load_membership(tiny_world.root / "world" / "world.json")["non_members"]
    assert 1 <= scores["eligible"] <= scores["scored"] == len(non_members)
    assert load_target_embedding(out, tiny_clip[0].config.projection_dim).dim() == 1  # loads as --target_embedding
