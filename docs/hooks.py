"""mkdocs hook: pages generated at build time, so that they cannot drift from the code and the results.

`docs/configuration.md` holds the marker `<!-- configuration-reference -->`; this hook replaces it with one table
per recipe (flag, type, default, help text), read from `dataclasses.fields(...)` of every dataclass the recipe
parses. A field added to any of them appears on the next build; nothing is written by hand, so nothing drifts.
`<!-- grid-table -->` becomes the latest forgetting grid from `benchmarks/results/grid.json`.
`tests/test_docs.py` imports `recipe_arguments` from here to check the README's commands against the same flags.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- configuration-reference -->"
GRID_MARKER = "<!-- grid-table -->"
GRID_JSON = ROOT / "benchmarks" / "results" / "grid.json"

# recipe file -> names (in the recipe module) of what it passes to `parse_args`, in order
RECIPES = {
    "unlearn.py": ("RUN_ARGUMENTS",),
    "evaluate_model.py": ("EvaluateArguments",),
    "robustness.py": ("RobustnessArguments", "RobustnessConfig"),
    "publish.py": ("PublishArguments",),
    "make_synthetic.py": ("MakeSyntheticArguments",),
}


def _load_recipe(name: str):
    path = ROOT / "recipes" / name
    spec = importlib.util.spec_from_file_location(f"_docs_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec.loader.exec_module(module)
    return module


def recipe_arguments() -> dict[str, tuple[type, ...]]:
    """Every recipe's argument dataclasses, as the recipe itself parses them."""
    out = {}
    for recipe, names in RECIPES.items():
        module = _load_recipe(recipe)
        types: list[type] = []
        for name in names:
            value = getattr(module, name)
            types.extend(value if isinstance(value, (tuple, list)) else [value])
        out[recipe] = tuple(types)
    return out


def _owner(cls: type, name: str) -> type:
    """The class in `cls`'s MRO that declares field `name` (the most derived one)."""
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return klass
    return cls


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "*required*"
    if isinstance(value, str):
        return f"`{value!r}`" if value else '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def dataclass_table(cls: type, skip: type | None = None) -> tuple[str, list[str]]:
    """A markdown table of `cls`'s own fields (without those declared by `skip` or its bases), and the names of
    the fields it inherits from a library (transformers' `TrainingArguments`)."""
    rows, inherited = [], []
    skipped = {f.name for f in dataclasses.fields(skip)} if skip is not None else set()
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skipped:
            continue
        owner = _owner(cls, f.name)
        if not owner.__module__.startswith("hf_privacy_backdoor") and owner.__module__ != cls.__module__:
            inherited.append(f.name)
            continue
        ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        help_text = f.metadata.get("help", "")
        rows.append(f"| `--{f.name}` | {_cell(ftype)} | {_cell(_default(f))} | {_cell(help_text)} |")
    table = "| flag | type | default | help |\n|---|---|---|---|\n" + "\n".join(rows)
    return table, inherited


def configuration_markdown() -> str:
    parts = []
    for recipe, types in recipe_arguments().items():
        parts.append(f"## `recipes/{recipe}`\n")
        parts.append(f"Parses {', '.join(f'`{t.__name__}`' for t in types)}; `--config FILE.yaml` gives defaults.\n")
        for cls in types:
            table, inherited = dataclass_table(cls)
            where = f"recipes/{recipe}" if cls.__module__.startswith("_docs_recipe_") else cls.__module__
            parts.append(f"### `{cls.__name__}` (`{where}`)\n")
            doc = (cls.__doc__ or "").strip().split("\n\n")[0]
            if doc and not doc.startswith(cls.__name__ + "("):
                parts.append(" ".join(doc.split()) + "\n")
            parts.append(table + "\n")
            if inherited:
                names = ", ".join(f"`{n}`" for n in inherited)
                parts.append(
                    f'??? note "{len(inherited)} more flags inherited from `transformers.TrainingArguments`"\n'
                    "    Their help is transformers' own (`--help` prints it). Names:\n"
                    f"    {names}\n"
                )
    parts.append(method_tables())
    return "\n".join(parts)


def method_tables() -> str:
    """One table per registered method: the fields its config adds to `UnlearningConfig` (`--method NAME`)."""
    from hf_privacy_backdoor.methods import METHODS
    from hf_privacy_backdoor.methods.base_config import UnlearningConfig

    parts = ["## Method settings (`recipes/unlearn.py --method NAME`)\n"]
    parts.append("Every method's config extends `UnlearningConfig` (the tables above list its fields with the")
    parts.append("backdoor method's); each method adds only the fields below.\n")
    for name, method in METHODS.items():
        table, _ = dataclass_table(method.config, skip=UnlearningConfig)
        parts.append(f"### `{name}`: `{method.config.__name__}`\n")
        doc = (method.config.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            parts.append(" ".join(doc.split()) + "\n")
        parts.append(table + "\n")
    return "\n".join(parts)


def grid_table_markdown(path: Path = GRID_JSON) -> str:
    """The latest forgetting grid (`bench_grid.py`) as one table: mean over seeds per defense and size."""
    import json

    data = json.loads(path.read_text())
    rows = [
        "| defense | removed | removed TPR after | kept TPR after | wrongly unlearned % | top-1 change (points) "
        "| steps | misses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {"text": 0, "image": 1, "both": 2}
    for a in sorted(data["aggregated"], key=lambda a: (order.get(a["defense"], 9), a["removed"])):
        change = 100 * (a["top1_after"] - a["top1_before"])
        misses = _cell("; ".join(a["misses"]) or "none").replace("top-1 drop (points)", "top-1 drop")
        rows.append(
            f"| {a['defense']} | {a['removed']} | {a['removed_tpr_after']:.3f} | {a['kept_tpr_after']:.3f} | "
            f"{a['wrongfully_unlearned_pct']:.1f} | {change:+.1f} | {a['steps_trained']:.0f} | {misses} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, configuration_markdown())
    if GRID_MARKER in markdown:
        markdown = markdown.replace(GRID_MARKER, grid_table_markdown())
    return markdown
