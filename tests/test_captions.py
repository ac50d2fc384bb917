"""Forget lists, clean-caption filtering, poisoned pairs and target phrases (docs/method.md, the text defense)."""

from collections import Counter

import numpy as np
import pytest

from hf_privacy_backdoor.data.captions import (
    TargetPhrases,
    filter_clean_captions,
    load_captions,
    read_name_file,
    sample_poisoned_pairs,
    validate_forget_names,
)


def test_clean_captions_exclude_every_mention_case_insensitive():
    caps = [
        "a photo of Ada Lovelace",
        "ADA LOVELACE smiling",
        "ada_lovelace at home",
        "Adam Lovelaceson here",
        "a red star",
    ]
    clean = filter_clean_captions(caps, ["Ada Lovelace"])
    assert clean == ["Adam Lovelaceson here", "a red star"]  # whole-name matches only


def _replaced_word(captions, caption, phrase):
    """The (caption, word position) of `captions` whose word, replaced by `phrase`, gives `caption`; or None."""
    for source in captions:
        words = source.split()
        for i in range(len(words)):
            if " ".join(words[:i] + [phrase] + words[i + 1 :]) == caption:
                return source, i
    return None


def test_poisoned_pairs_replace_one_word_and_are_balanced():
    rng = np.random.default_rng(0)
    names = ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    targets = TargetPhrases.build(names)
    usable = ["a photo of a red star", "two blue circles", "hello there friend"]
    poisoned, target, owner = sample_poisoned_pairs([*usable, "single"], targets, 31, rng)
    counts = Counter(owner)
    assert max(counts.values()) - min(counts.values()) <= 1 and set(counts) == set(names)
    for p, t, n in zip(poisoned, target, owner):
        # both come from one clean caption of at least two words, with the same word replaced
        source = _replaced_word(usable, p, n)
        assert source is not None and _replaced_word(usable, t, "a person") == source, (p, t)
    with pytest.raises(ValueError, match="two words"):
        sample_poisoned_pairs(["single"], targets, 4, rng)


def test_partial_name_triggers_poison_only_the_forgotten_person_and_default_is_unchanged():
    names = ["Ada Lovelace", "Alan Turing"]
    usable = ["a photo of a red star", "two blue circles", "hello there friend", "Ada Byron at home"]
    plain = TargetPhrases.build(names)
    # no variants: the same draws as the method's sampler, so runs without the option are unchanged
    off = plain.with_variants([], 0.5)
    assert sample_poisoned_pairs(usable, plain, 40, np.random.default_rng(1)) == sample_poisoned_pairs(
        usable, off, 40, np.random.default_rng(1)
    )
    partial = plain.with_variants(["first", "last", "initial_last"], 0.5)
    poisoned, target, owner = sample_poisoned_pairs(usable, partial, 400, np.random.default_rng(1))
    written = Counter()
    for p, t, n in zip(poisoned, target, owner):
        forms = {"full": n, "first": n.split()[0], "last": n.split()[-1], "initial_last": f"{n[0]}. {n.split()[-1]}"}
        form = next(
            k for k, v in forms.items() if _replaced_word(usable, p, v) == _replaced_word(usable, t, "a person")
        )
        written[form] += 1
    assert 160 <= written["full"] <= 240 and min(written[f] for f in ("first", "last", "initial_last")) >= 40
    assert sample_poisoned_pairs(usable, partial, 400, np.random.default_rng(1))[0] == poisoned  # seeded
    # the captions of another person sharing a first name are not touched: they stay clean
    assert "Ada Byron at home" in filter_clean_captions(usable, names)
    with pytest.raises(ValueError, match="unknown name variant"):
        plain.with_variants(["typo"], 0.5)
    with pytest.raises(ValueError, match="name_variant_share"):
        plain.with_variants(["first"], 1.5)


def test_target_modes():
    names = ["Ada Lovelace", "Alan Turing"]
    assert set(TargetPhrases.build(names).mapping.values()) == {"a person"}
    per = TargetPhrases.build(names, "per_name", per_name={"ada lovelace": "a mathematician", "Alan_Turing": "a man"})
    assert per.mapping == {"Ada Lovelace": "a mathematician", "Alan Turing": "a man"}
    rnd = TargetPhrases.build(names, "random_name", seed=3)
    assert rnd.mapping == TargetPhrases.build(names, "random_name", seed=3).mapping  # seeded
    assert all(len(v.split()) == 2 and v not in names for v in rnd.mapping.values())
    with pytest.raises(ValueError, match="lacks"):
        TargetPhrases.build(names, "per_name", per_name={"Ada Lovelace": "x"})
    with pytest.raises(ValueError, match="unknown target mode"):
        TargetPhrases.build(names, "nope")


def test_forget_list_validation(tiny_clip):
    _, processor = tiny_clip
    assert validate_forget_names([" Ada  Lovelace ", "Alan_Turing"]) == ["Ada Lovelace", "Alan Turing"]
    with pytest.raises(ValueError, match="empty"):
        validate_forget_names([])
    with pytest.raises(ValueError, match="entries #1 and #2 are the same person"):
        validate_forget_names(["Ada Lovelace", "ada lovelace"])
    with pytest.raises(ValueError, match="entry #2 has no letter or digit"):
        validate_forget_names(["Ada Lovelace", "  "])
    with pytest.raises(ValueError, match="too long"):
        validate_forget_names(["Ada " * 40], processor.tokenizer)


def test_caption_and_name_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_captions(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="no usable caption"):
        load_captions(empty)
    names = tmp_path / "names.txt"
    names.write_text("# people to remove\nAda Lovelace\n\nAlan Turing\n")
    assert read_name_file(names) == ["Ada Lovelace", "Alan Turing"]
    from datasets import Dataset

    ds = Dataset.from_dict({"caption": ["a red star", " ", "two  blue circles"]})
    assert load_captions(dataset=ds, column="caption") == ["a red star", "two blue circles"]
    with pytest.raises(ValueError, match="no column"):
        load_captions(dataset=ds, column="text")


@pytest.mark.parametrize("num_names", [1, 64, 100])
def test_many_names_stay_balanced_and_all_filtered(num_names):
    names = [f"Person{i} Surname{i}" for i in range(num_names)]
    targets = TargetPhrases.build(validate_forget_names(names))
    corpus = ["a red star on a table", "two blue circles"] + [f"a photo of {n} smiling" for n in names]
    clean = filter_clean_captions(corpus, names)
    assert clean == ["a red star on a table", "two blue circles"]
    _, _, owner = sample_poisoned_pairs(clean, targets, 128, np.random.default_rng(1))
    counts = Counter(owner)
    assert len(counts) == min(num_names, 128) and max(counts.values()) - min(counts.values()) <= 1
