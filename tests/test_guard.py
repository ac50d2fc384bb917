"""The privacy guard on names as people write them (hyphens, accents, apostrophes, other scripts, one or four
parts) and every spelling a file, a path or a log line may hold; and the forget list as people save it."""

import json
import random
import re
import unicodedata
from urllib.parse import quote

import pytest

from hf_privacy_backdoor.data.captions import read_name_file, validate_forget_names
from hf_privacy_backdoor.data.names import name_key, normal_form
from hf_privacy_backdoor.hub import PublishError, redact, refuse_on_names, scan_for_names


NAMES = {
    "hyphenated": "Anne-Marie Dupont-Aignan",
    "accented": "Zoë Núñez",
    "apostrophe": "Siobhán O'Brien",
    "non_latin": "Дмитрий Иванов",
    "single_word": "Moonbeam",
    "four_part": "María José García Pérez",
}
OTHERS = ["Grace Hopper", "Alan Turing"]  # the forget list holds other people too: hits must name the right entry
SPELLINGS = "verbatim upper stripped slug snake camel spaces newline last_first typographic json utf16 url".split()


def _noise(size: int, seed: int = 0) -> bytes:
    """Binary noise around a planted name (seeded: the same bytes every run)."""
    return random.Random(seed).randbytes(size)


def _stripped(name: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", name) if not unicodedata.combining(c))


def spell(name: str, how: str) -> str | bytes:
    """`name` written the way `how` says (bytes for UTF-16)."""
    parts = name.split()
    plain = _stripped(name)
    if how == "verbatim":
        return name
    if how == "upper":
        return name.upper()
    if how == "stripped":
        return plain
    if how in ("slug", "snake"):
        sep = "-" if how == "slug" else "_"
        return re.sub(r"[^\w]+", sep, plain.lower().replace("'", "")).strip(sep)
    if how == "camel":
        return "".join(w[:1].upper() + w[1:].lower() for w in re.split(r"[\s\-']+", plain))
    if how == "spaces":
        return "   ".join(parts)
    if how == "newline":
        return "\n".join(parts)
    if how == "last_first":
        return f"{parts[-1]}, {' '.join(parts[:-1])}" if len(parts) > 1 else name
    if how == "typographic":
        return name.replace("'", "\u2019")
    if how == "json":
        return json.dumps(name)[1:-1]  # ensure_ascii: \u escapes for every non-ASCII letter
    if how == "utf16":
        return name.encode("utf-16")
    if how == "url":
        return quote(name)
    raise ValueError(how)


def _planted(spelling: str | bytes, where: str) -> tuple[str, str | bytes]:
    """(label, content) with the spelling in a text file, a binary file or a path."""
    if where == "path":
        text = spelling.decode("utf-16") if isinstance(spelling, bytes) else spelling
        return f"models/{text}/config.json", "{}"
    raw = spelling if isinstance(spelling, bytes) else spelling.encode("utf-8")
    if where == "binary":
        return "model.safetensors", _noise(4096, 1) + raw + _noise(4096, 2)
    return "notes.txt", (b"trained without " + raw + b" in the list") if isinstance(spelling, bytes) else (
        f"trained without {spelling} in the list"
    )


@pytest.mark.parametrize("where", ["text", "binary", "path"])
@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("kind", list(NAMES))
def test_every_spelling_of_every_kind_of_name_is_refused(kind, how, where):
    names = [*OTHERS, NAMES[kind]]
    label, content = _planted(spell(NAMES[kind], how), where)
    hits = scan_for_names({label: content}, names)
    assert [h.index for h in hits] == [3], f"{kind} written {how} in a {where} was not found"
    with pytest.raises(PublishError) as err:
        refuse_on_names({label: content}, names, "the push")
    assert not scan_for_names({"message": str(err.value)}, names)  # the refusal never quotes the name


@pytest.mark.parametrize(
    "text",
    [
        "the alliance of ballistic gallium alloys",  # "Al Li" inside longer words
        "Alice Li and Alan Lim met in Alicante",
        "a moonbeamer and sunbeam; moon beams",
        "Zoe Nunezova; Nunez-Zoeller",
        "Anne Dupont; Marie Aignan",  # parts of a name apart are not the name
    ],
)
def test_text_with_words_that_merely_contain_a_name_is_accepted(text):
    names = ["Al Li", "Moonbeam", "Zoë Núñez", "Anne-Marie Dupont-Aignan"]
    assert scan_for_names({"a.txt": text, "b.txt": text.encode("utf-16"), "c.txt": text.encode("utf-8")}, names) == []


def test_a_short_name_inside_longer_words_of_binary_data_is_accepted():
    blob = _noise(2048, 1) + "\x00the alliance of ballistic gallium\x00".encode("utf-16-le") + _noise(2048, 2)
    assert scan_for_names({"model.safetensors": blob}, ["Al Li"]) == []


def test_a_clean_run_folder_is_accepted_and_a_planted_one_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["CLIPModel"], "hidden_size": 64}))
    (tmp_path / "model.safetensors").write_bytes(_noise(1 << 20))
    (tmp_path / "README.md").write_text("# CLIP with 2 people removed\n\nIDIA TPR 0.00\n", encoding="utf-8")
    names = list(NAMES.values())
    assert scan_for_names([tmp_path], names) == []
    (tmp_path / "README.md").write_text("# CLIP without zoe_nunez\n", encoding="utf-8")
    assert [h.index for h in scan_for_names([tmp_path], names)] == [2]


def test_redact_withholds_every_line_that_holds_a_name():
    text = "publishing failed: HTTP 500\nRetry with:\n  python recipes/publish.py --output_dir out/anne-marie_dupont-aignan"
    redacted = redact(text, list(NAMES.values()))
    assert redacted.splitlines()[:2] == ["publishing failed: HTTP 500", "Retry with:"]
    assert "entry #1" in redacted and not scan_for_names({"r": redacted}, list(NAMES.values()))


def test_the_normal_form_is_the_documented_one():
    assert normal_form("  Siobhán O’Brien-Smith\n") == "siobhan obrien smith"
    assert normal_form("ＡＤＡ") == "ada"  # NFKC: full-width letters
    assert name_key("Dr. Zoë  Núñez Jr.") == name_key("zoe_nunez") == "zoenunez"


# ----------------------------------------------------------------------------------------------------------
# The forget list as people write it


def test_forget_list_files_as_people_save_them(tmp_path):
    path = tmp_path / "names.txt"
    text = "\ufeff# people to remove\r\n  Anne-Marie Dupont-Aignan  \r\n\r\nZoë Núñez\r\nSiobhán O’Brien\r\n"
    path.write_bytes(text.encode("utf-8"))
    assert read_name_file(path) == ["Anne-Marie Dupont-Aignan", "Zoë Núñez", "Siobhán O’Brien"]
    path.write_bytes("Zoë Núñez".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8"):
        read_name_file(path)


def test_forget_lists_accept_names_as_people_write_them():
    names = [*NAMES.values(), "Dr. Ada Lovelace", "Martin Luther King Jr.", "Siobhán O’Neill", "李小龍"]
    assert validate_forget_names(names) == names


@pytest.mark.parametrize(
    "first, second",
    [
        ("Zoë Núñez", "zoe nunez"),
        ("Anne-Marie Dupont", "Anne Marie  Dupont"),
        ("Siobhán O'Brien", "Siobhan O’Brien"),
        ("Ada Lovelace", "Dr. Ada Lovelace"),
    ],
)
def test_one_person_in_two_spellings_is_a_duplicate_named_by_position(first, second):
    with pytest.raises(ValueError) as err:
        validate_forget_names(["Grace Hopper", first, second])
    assert "entries #2 and #3 are the same person" in str(err.value)
    assert not scan_for_names({"message": str(err.value)}, [first, second])


def test_entries_without_letters_and_unknown_tokens_are_refused_by_position():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"[UNK]": 0, "<s>": 1, "</s>": 2, "ada": 3, "lovelace": 4, "grace": 5, "hopper": 6}
    backend = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
    with pytest.raises(ValueError) as err:
        validate_forget_names(["grace hopper", "zoë núñez", "ada lovelace"], tokenizer)
    assert "entry #2 holds characters the model's tokenizer cannot represent" in str(err.value)
    assert "núñez" not in str(err.value).casefold()
    with pytest.raises(ValueError, match="entry #2 has no letter or digit"):
        validate_forget_names(["Ada Lovelace", " - "])
