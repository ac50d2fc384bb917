"""The README stays a front door, and the documentation site builds and renders in a real browser.

* README.md is at most 200 lines, every recipe command it shows parses with that recipe's own dataclasses (so a
  renamed flag fails here), its `make` targets exist and its links point at files that exist.
* The generated configuration reference lists every field of every recipe's dataclasses.
* Every public class, function, method and property the API pages render has a docstring, and every help string
  of a recipe's or a method's fields is a sentence (capital first, full stop last).
* The site builds with `mkdocs build --strict` and its index, API and results pages load in headless Chromium with
  no console error, every image on the results page loaded (natural width > 0), and the API page rendering
  `BackdoorUnlearningTrainer`. Skipped, with the reason, where mkdocs or Chromium is missing (`.ci/run` installs
  both: the docs extra through the Makefile's venv, Chromium through apt-get).
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _hooks():
    spec = importlib.util.spec_from_file_location("_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def _recipe_arguments() -> dict[str, tuple[type, ...]]:
    return _hooks().recipe_arguments()


def _shell_lines(path: Path) -> list[str]:
    """Every shell line of a Markdown file's bash code blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _readme_commands() -> list[str]:
    return _shell_lines(README)


def _recipe_commands(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(recipe file, its arguments) of every line that runs `recipes/X.py`; a `...` placeholder is dropped."""
    commands = []
    for line in lines:
        argv = shlex.split(line, comments=True)
        scripts = [i for i, arg in enumerate(argv) if arg.startswith("recipes/") and arg.endswith(".py")]
        if scripts:
            args = [arg for arg in argv[scripts[0] + 1 :] if arg != "..."]
            commands.append((argv[scripts[0]].removeprefix("recipes/"), args))
    return commands


# ----------------------------------------------------------------------------------------------------------
# README


def test_readme_is_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move detail to a docs/ page"


def test_readme_keeps_the_two_setup_commands():
    commands = [shlex.split(line, comments=True) for line in _readme_commands()]
    assert ["make", "demo"] in commands and ["make", "test"] in commands  # .ci/run calls README's test command
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "test-all", "docs", "docs-serve"):
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"Makefile has no target {target!r}"


def test_readme_recipe_commands_parse(monkeypatch, tmp_path):
    """Every `recipes/X.py` command in the README parses with the recipe's dataclasses (flags, values, YAML)."""
    from hf_privacy_backdoor.cli import parse_args

    monkeypatch.setenv("SYNTHETIC_DIR", str(tmp_path))  # `${SYNTHETIC}` without building the world
    recipes = _recipe_arguments()
    checked = 0
    for script, args in _recipe_commands(_readme_commands()):
        assert script in recipes, f"README runs {script}, which the docs' configuration reference does not cover"
        for i, arg in enumerate(args):
            if arg == "--config":
                assert (ROOT / args[i + 1]).is_file(), f"README's {script} command uses a missing {args[i + 1]}"
        parse_args(recipes[script], args)  # raises on an unknown flag, a bad value or a bad YAML key
        checked += 1
    assert checked >= 2, "the README should show a recipe command and a publish command"


def test_docs_recipe_commands_parse(monkeypatch, tmp_path):
    """Every recipe command on a docs page uses flags its recipe has (paths there are placeholders: a recipe that
    checks its input folders may refuse them, which is fine; an unknown flag or a bad value is not)."""
    from hf_privacy_backdoor.cli import parse_args

    monkeypatch.setenv("SYNTHETIC_DIR", str(tmp_path))
    recipes = _recipe_arguments()
    lines = [line for page in sorted((ROOT / "docs").rglob("*.md")) for line in _shell_lines(page)]
    commands = _recipe_commands(lines)
    assert len(commands) >= 10
    for script, args in commands:
        assert script in recipes, f"the docs run {script}, which the configuration reference does not cover"
        try:
            parse_args(recipes[script], args)
        except FileNotFoundError:
            pass  # a placeholder path (DIR, /data/...): the flags themselves parsed


def test_readme_links_exist():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_nothing_points_outside_the_repository():
    """The method's specification lives in docs/method.md; no file may cite a folder next to the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    needle = "../" + "shared"  # spelled in two parts so that this file does not match itself
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".yaml", ".yml", ".cfg", ".toml"} and path.is_file():
            if needle in path.read_text(encoding="utf-8", errors="ignore"):
                offenders.append(name)
    assert not offenders, f"these files point at {needle}: {offenders}"


# ----------------------------------------------------------------------------------------------------------
# Generated configuration reference


def test_configuration_reference_lists_every_field():
    hooks = _hooks()
    page = hooks.configuration_markdown()
    for recipe, types in _recipe_arguments().items():
        assert f"recipes/{recipe}" in page
        for cls in types:
            _, inherited = hooks.dataclass_table(cls)
            for f in dataclasses.fields(cls):
                if f.init and f.name not in inherited:
                    assert f"`--{f.name}`" in page, f"{cls.__name__}.{f.name} is missing from the reference"


def test_figures_are_drawn_from_the_json_results(tmp_path):
    """`benchmarks/plot_results.py` redraws every figure the docs show from the committed JSON results."""
    spec = importlib.util.spec_from_file_location("_plot_results", ROOT / "benchmarks" / "plot_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(["--output_dir", str(tmp_path)])
    names = {p.name for p in written}
    assert names == {"grid.png", "robustness.png", "methods.png", "correct_templates_demo_text.png"}
    for name in names:
        assert (ROOT / "docs" / "assets" / name).is_file(), f"docs/assets/{name} is missing: run make docs-figures"
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------------
# Docstrings and help strings


def _api_directives() -> list[tuple[str, list[str] | None]]:
    """(dotted path, its `members:` list or None for all, [] for `members: false`) of every `:::` directive of the
    API pages."""
    directives = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.match(r":::\s+(\S+)", line)
            if not match:
                continue
            options = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                options.append(following)
            text = "\n".join(options)
            members = None
            if re.search(r"members:\s*false", text):
                members = []
            elif listed := re.search(r"members:\s*\n((?:\s+- \S+\n?)+)", text + "\n"):
                members = re.findall(r"- (\S+)", listed.group(1))
            directives.append((match.group(1), members))
    return directives


def _resolve(path: str):
    """The module or object a dotted path names (the longest importable module prefix, then attributes)."""
    import importlib

    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for part in parts[k:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _own_methods(cls: type, prefix: str):
    """A class's public methods and properties declared in its own body (nothing inherited, nothing generated)."""
    import inspect

    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            yield f"{prefix}.{name}", value


def _api_objects():
    """Every public class, function, method and property the API pages render, by dotted name."""
    import inspect

    for path, members in _api_directives():
        obj = _resolve(path)
        if not inspect.ismodule(obj):
            yield path, obj
            if members != [] and inspect.isclass(obj):
                yield from _own_methods(obj, path)
            continue
        names = members if members is not None else [n for n in vars(obj) if not n.startswith("_")]
        for name in names:
            value = getattr(obj, name)
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue  # constants (METHODS, RUN_ARGUMENTS) carry their doc in the module's source
            if members is None and value.__module__ != obj.__name__:
                continue  # imported from another module, rendered (and checked) there
            yield f"{path}.{name}", value
            if inspect.isclass(value):
                yield from _own_methods(value, f"{path}.{name}")


def _own_docstring(obj) -> str:
    doc = (obj.fget.__doc__ if isinstance(obj, property) else obj.__doc__) or ""
    if isinstance(obj, type) and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature a dataclass or a NamedTuple writes when the class has no docstring
    return doc.strip()


def test_every_public_object_on_the_api_pages_has_a_docstring():
    objects = dict(_api_objects())
    assert len(objects) > 200, f"only {len(objects)} objects found: is the directive parsing broken?"
    missing = sorted(name for name, obj in objects.items() if not _own_docstring(obj))
    assert not missing, f"{len(missing)} public objects on the API pages have no docstring: {missing}"


def _help_fields():
    """(class, field) of every field a recipe parses or a method's config declares, library-inherited ones aside."""
    from hf_privacy_backdoor.methods import METHODS

    hooks = _hooks()
    classes = [cls for types in _recipe_arguments().values() for cls in types]
    classes += [method.config for method in METHODS.values()]
    for cls in classes:
        for f in dataclasses.fields(cls):
            owner = hooks._owner(cls, f.name)
            if f.init and (owner.__module__.startswith("hf_privacy_backdoor") or owner.__module__ == cls.__module__):
                yield owner, f


def test_every_help_string_is_a_sentence():
    bad = set()
    fields = list(_help_fields())
    assert len(fields) > 100
    for owner, f in fields:
        text = f.metadata.get("help", "").strip()
        if not text or not (text[0].isupper() or text[0] in "`'\"") or text[-1] not in ".?)":
            bad.add(f"{owner.__name__}.{f.name}: {text!r}")
    assert not bad, f"{len(bad)} help strings are not sentences (capital first, '.' last): {sorted(bad)}"


# ----------------------------------------------------------------------------------------------------------
# The site in a browser

# Injected at the top of a copy of each page: collects errors (script errors, failed resources, console.error,
# rejected promises) and, after the load event, writes them with every image's state into the DOM for --dump-dom.
_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) { __errors.push("failed to load " + (t.src || t.href)); }
  else { __errors.push("script error: " + e.message); }
}, true);
window.addEventListener("unhandledrejection", function (e) { __errors.push("unhandled rejection: " + e.reason); });
(function () {
  var original = console.error;
  console.error = function () { __errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
                                return original.apply(console, arguments); };
})();
window.addEventListener("load", function () { setTimeout(function () {
  var images = Array.prototype.map.call(document.images, function (i) {
    return {src: i.getAttribute("src"), complete: i.complete, naturalWidth: i.naturalWidth}; });
  var out = document.createElement("pre"); out.id = "__docs_check";
  out.textContent = JSON.stringify({errors: __errors, images: images, text: document.body.innerText});
  document.body.appendChild(out);
}, 500); });
</script>"""


def _chromium() -> str | None:
    names = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else CHROMIUM_NAMES
    return next(filter(None, map(shutil.which, names)), None)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built strictly into a temporary folder and served over HTTP on a free local port."""
    if _chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it): browser test skipped")
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip('mkdocs / mkdocstrings-python are not installed: pip install -e ".[docs]" (make test does)')
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _render(site, page: str, tmp_path) -> tuple[dict, list[str]]:
    """Load `page` of the built site in headless Chromium; returns the probe's findings and console lines."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it): browser test skipped")
    folder, url = site
    source = folder / page
    probe = source.with_name(source.stem + ".__check.html")
    html = source.read_text(encoding="utf-8")
    probe.write_text(html.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    command = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        f"{url}/{probe.relative_to(folder).as_posix()}",
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="__docs_check">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"the page's check did not run (chromium exit {done.returncode}):\n{done.stderr[-3000:]}"
    import html as html_module

    report = json.loads(html_module.unescape(found.group(1)))
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return report, console


@pytest.mark.parametrize("page", ["index.html", "api/training.html", "results.html"])
def test_page_renders_without_errors(site, page, tmp_path):
    report, console = _render(site, page, tmp_path)
    assert report["errors"] == [], f"{page}: {report['errors']}"
    assert console == [], f"{page}: console messages {console}"
    broken = [i["src"] for i in report["images"] if not (i["complete"] and i["naturalWidth"] > 0)]
    assert broken == [], f"{page}: images that did not load: {broken}"
    if page == "api/training.html":
        assert "BackdoorUnlearningTrainer" in report["text"]
        assert "compute_loss" in report["text"] or "train" in report["text"]
    if page == "results.html":
        sources = {Path(i["src"]).name for i in report["images"]}
        assert {"grid.png", "robustness.png", "correct_templates_demo_text.png"} <= sources, sources
