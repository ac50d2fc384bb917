"""Recipe argument parsing: dataclasses + `HfArgumentParser`, with `--config file.yaml` as defaults.

Command-line flags win over the YAML file; unknown YAML keys are an error that lists the valid ones. A
`method` (flag or YAML key) picks the config class of that method (`hf_privacy_backdoor.methods`) in place of
any `UnlearningConfig` among `dataclass_types`, so that each method's own flags parse.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `argv` (default: sys.argv[1:]) into instances of `dataclass_types`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--method", default=None)
    known, rest = pre.parse_known_args(argv)
    config = _read_recipe(known.config) if known.config is not None else None
    method = known.method or (config or {}).get("method")
    if known.method is not None:
        rest += ["--method", known.method]
    parser = HfArgumentParser(_method_types(dataclass_types, method))
    parser.add_argument("--config", default=None, help="YAML recipe with defaults for these flags; flags win.")
    if config is not None:
        config = _command_line_towers_win(config, rest)
        valid = {a.dest for a in parser._actions}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ValueError(
                f"{known.config}: unknown keys {unknown} for method {method or 'backdoor'!r}. Valid keys: see --help"
            )
        for action in parser._actions:
            if action.dest in config:
                action.default = config[action.dest]
                action.required = False
    outputs = parser.parse_args_into_dataclasses(args=rest)
    return tuple(o for o in outputs if not isinstance(o, argparse.Namespace))  # drop the leftover --config


def _read_recipe(path_name: str) -> dict[str, Any]:
    path = Path(path_name)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path_name!r} does not exist")
    config = _load_yaml(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path_name}: a recipe is a flat mapping of flag names to values")
    return _substitute_synthetic(config)


def _command_line_towers_win(config: dict[str, Any], rest: Sequence[str]) -> dict[str, Any]:
    """`towers` and its alias `defense` are one setting: given on the command line, it replaces the recipe's."""
    if any(a.split("=")[0] in ("--towers", "--defense") for a in rest):
        return {k: v for k, v in config.items() if k not in ("towers", "defense")}
    return config


def _method_types(dataclass_types: Sequence[type], method: str | None) -> list[type]:
    """`dataclass_types` with any `UnlearningConfig` replaced by the config class of `method` (if given)."""
    if method is None:
        return list(dataclass_types)
    from .methods import get_method
    from .methods.base_config import UnlearningConfig

    config = get_method(method).config
    return [config if isinstance(t, type) and issubclass(t, UnlearningConfig) else t for t in dataclass_types]


USER_ERRORS = (ValueError, TypeError, KeyError, OSError, yaml.YAMLError)


def run_recipe(main: Callable[[], object]) -> None:
    """Run a recipe's `main` and exit: 0 on success (or the int it returns), 1 when the Hub did not take a push,
    2 on a bad input (a missing file or folder, a malformed value, a name with no photos, a refused publish),
    each as one `error: ...` line on stderr rather than a traceback. HF_PB_VERBOSE=1 shows the traceback."""
    from .hub import PushFailed

    try:
        code = main()
    except PushFailed as err:
        _fail(err, 1)
    except USER_ERRORS as err:
        _fail(err, 2)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(err: BaseException, status: int) -> None:
    if os.environ.get("HF_PB_VERBOSE") == "1":
        raise err
    if isinstance(err, KeyError):  # its text is a bare key, which may be a person's name: never echo it
        message = "an entry was not found (run with HF_PB_VERBOSE=1 to see which; that output may hold names)"
    else:
        message = str(err) or type(err).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _load_yaml(path: Path) -> Any:
    """A recipe's YAML; a syntax error becomes one line with its position (never the text around it, which may
    hold a name)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(
            f"{path} is not valid YAML{where}: {getattr(err, 'problem', None) or 'syntax error'}"
        ) from None


def yaml_config_keys(path: str | Path) -> dict[str, Any]:
    """The flat mapping of a recipe YAML (for validation in tests)."""
    return yaml.safe_load(Path(path).read_text()) or {}


SYNTHETIC_TOKEN = "${SYNTHETIC}"


def setup_logging(verbose: bool = False) -> None:
    """Quiet by default (warnings from our code, errors from libraries); HF_PB_VERBOSE=1 shows everything."""
    import logging
    import os
    import warnings

    verbose = verbose or os.environ.get("HF_PB_VERBOSE") == "1"
    logging.basicConfig(
        format="%(levelname)s %(name)s: %(message)s", level=logging.INFO if verbose else logging.WARNING
    )
    if not verbose:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", message=".*torchvision.*")


def synthetic_root() -> str:
    """The synthetic world's folder: `SYNTHETIC_DIR` if set, else the cached build of the tier `SYNTHETIC_TIER`
    names (default "small"; built once if missing)."""
    root = os.environ.get("SYNTHETIC_DIR")
    if not root:
        from .synthetic import PretrainConfig, get_or_build_synthetic

        pretrain = PretrainConfig.for_tier(os.environ.get("SYNTHETIC_TIER", "small"))
        root = str(get_or_build_synthetic(pretrain_config=pretrain).root)
    return root


def _substitute_synthetic(config: dict) -> dict:
    """Replace `${SYNTHETIC}` in a recipe's string values by the synthetic world's folder."""
    if not any(isinstance(v, str) and SYNTHETIC_TOKEN in v for v in config.values()):
        return config
    root = synthetic_root()
    return {k: v.replace(SYNTHETIC_TOKEN, root) if isinstance(v, str) else v for k, v in config.items()}
