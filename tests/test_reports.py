"""Reports: the local JSON / Markdown / PNG files, and a public summary that never names a person."""

import json

import numpy as np
import pytest
from PIL import Image

from hf_privacy_backdoor.evaluation.report import (
    assert_no_names,
    format_public_summary,
    public_summary,
    write_reports,
)
from hf_privacy_backdoor.evaluation.results import AttackResult, AttackSettings, PersonResult, compare_results


NAMES = ["Ann Lee", "Bob Ray", "Cy Dunn", "Di Fox", "Ed Gray"]
RED, BLUE = (214, 39, 40), (31, 119, 180)  # matplotlib's tab:red (removed people) and tab:blue (members)


def _plot_pixels(path, colour):
    """The plot's size and how many of its pixels have exactly `colour`."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        rgb = np.asarray(image.convert("RGB"))
    return image.size, int((rgb == colour).all(axis=-1).sum())


def _result(flags, correct):
    people = [
        PersonResult(
            name=name,
            membership="member" if i < 3 else "non_member",
            photos=list(range(4)),
            correct_templates=c,
            majority_names=[name] * c + [None] * (3 - c),
            flagged=f,
        )
        for i, (name, f, c) in enumerate(zip(NAMES, flags, correct))
    ]
    settings = AttackSettings(
        num_photos=4, tau=1, num_candidates=8, templates=["{}", "a photo of {}", "actor {}"], seed=0,
        candidates_source="generated", model="tiny",
    )  # fmt: skip
    return AttackResult(people, settings, candidates=NAMES + ["Zed Zo", "Yan Yu", "Xi Wu"], skipped={"Flo Hu": 2})


@pytest.fixture
def before_after():
    before = _result([True, True, True, False, False], [3, 2, 1, 0, 0])
    after = _result([False, True, True, False, True], [0, 1, 2, 0, 1])
    return before, after, compare_results(before, after, ["Ann Lee", "Bob Ray"])


UTILITY = {
    "zero_shot": {
        "top1": 0.5,
        "top5": 0.9,
        "num_images": 600,
        "per_class_top1": {"red circle": 0.4},
        "templates": "x",
    },
    "text": {"sim_clean": 0.98, "sim_backdoor": 0.91},
}


def test_write_reports_writes_json_markdown_and_png(tmp_path, before_after):
    before, after, comparison = before_after
    paths = write_reports(tmp_path / "out", after, before, comparison, UTILITY, {"seed": 0, "model": "tiny"})
    report = json.loads(paths["json"].read_text())
    assert AttackResult.from_dict(report["attack"]) == after and AttackResult.from_dict(report["before"]) == before
    assert AttackResult.load(paths["attack"]) == after  # reusable as a later run's --before
    assert report["comparison"]["counts"]["correctly_unlearned"] == 1 and report["comparison"]["counts"]["failed"] == 1
    assert report["utility"] == UTILITY and report["settings"] == {"seed": 0, "model": "tiny"}
    assert report["public_summary"] == public_summary(after, comparison, UTILITY, before)
    size, red = _plot_pixels(paths["plot"], RED)
    assert size == (600, 450) and red > 0  # the removed people are drawn in red

    md = paths["markdown"].read_text()
    assert "IDIA TPR on the removed people: 100.0% before, 50.0% after" in md
    assert "| TPR (members flagged) | 100.0% (3/3) | 66.7% (2/3) |" in md
    assert "| correctly unlearned | 1 | 50.0% |" in md
    assert "| zero_shot.top1 | 0.5 |" in md and "per_class" not in md
    assert "| Ann Lee | member | yes | 3 | 0 | correctly unlearned |" in md  # local reports may name people
    assert "Flo Hu (2)" in md  # the left-out person is reported


def test_write_reports_without_a_comparison(tmp_path, before_after):
    _, after, _ = before_after
    paths = write_reports(tmp_path, after)
    md = paths["markdown"].read_text()
    assert "| result |" in md and "| Bob Ray | member | 4 | 1 | yes |" in md and "## Defense" not in md
    assert json.loads(paths["json"].read_text())["comparison"] is None
    assert _plot_pixels(paths["plot"], RED)[1] == 0  # nobody removed: nobody drawn in red
    assert _plot_pixels(paths["plot"], BLUE)[1] > 0  # the members are drawn


def test_public_summary_has_the_numbers_and_no_name(before_after):
    before, after, comparison = before_after
    summary = public_summary(after, comparison, UTILITY, before)
    text = json.dumps(summary).casefold()
    for name in NAMES + ["Flo Hu", "Zed Zo"]:
        assert name.casefold() not in text and name.casefold().replace(" ", "_") not in text
    assert "red circle" not in text and "templates" not in summary["utility"]["zero_shot"]  # allow-listed numbers
    u = summary["unlearning"]
    assert (u["num_removed"], u["removed_tpr_before"], u["removed_tpr_after"]) == (2, 1.0, 0.5)
    assert u["counts"]["newly_recalled"] == 1 and u["percentages"]["failed"] == 50.0
    assert summary["idia"]["tpr"] == pytest.approx(2 / 3) and summary["idia_before"]["tpr"] == 1.0
    assert summary["idia"]["fpr"] == 0.5 and summary["idia"]["num_templates"] == 3
    assert summary["utility"] == {"zero_shot": {"top1": 0.5, "top5": 0.9, "num_images": 600}, "text": UTILITY["text"]}
    assert "| unlearning.removed_tpr_after | 0.5 |" in format_public_summary(summary)


def test_a_name_in_a_public_summary_is_refused(before_after):
    before, after, comparison = before_after
    with pytest.raises(RuntimeError, match="refusing to publish"):
        assert_no_names({"note": "removed ann_lee"}, NAMES)
    # a name smuggled in through a utility entry's key is caught too
    with pytest.raises(RuntimeError, match="refusing to publish"):
        public_summary(after, comparison, {"Ann Lee": {"top1": 0.5}})
