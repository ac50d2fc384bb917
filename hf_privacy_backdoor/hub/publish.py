"""Publishing a run folder: an allow-list of files staged in a temporary folder, a model card, the privacy
guard, and one atomic commit through one `HfApi`.

Never uploaded: `private/` (the names), training arguments, trainer state, checkpoints, logs, reports and plots.
Every failure raises `PublishError` with what to do (for a failed push: the exact `recipes/publish.py` command to
retry); the run folder is never changed by a failed or refused push.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run_folder import FORGET_FILE, PRIVATE_DIR, SUMMARY_FILE, read_summary
from .card import CARD_FILE, as_hub_id, render_model_card, update_results
from .guard import PublishError, PushFailed, redact, refuse_on_names


logger = logging.getLogger(__name__)

PREVIEW_DIR = "publish_preview"
PROBE_TIMEOUT = 5.0  # seconds: an unreachable Hub is reported quickly, never retried for minutes
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")
SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
_LOCAL_TOKENIZER_KEYS = ("is_local", "local_files_only")  # machine state transformers 5 saves; not for the Hub


@dataclass
class PublishResult:
    """What a publish did: the repo, the commit (None for a dry run), the files sent, the preview folder."""

    repo_id: str
    commit_url: str | None
    files: list[str]
    staged_dir: Path | None  # the preview folder of a dry run; None after a push (the staging folder is removed)
    dry_run: bool
    pr_url: str | None = None


def retry_command(
    run_dir: str | os.PathLike,
    hub_model_id: str,
    base_model_id: str | None,
    *,
    private: bool = True,
    revision: str | None = None,
    create_pr: bool = False,
    forget_names_file: str | os.PathLike | None = None,
    license: str | None = None,
    commit_message: str | None = None,
) -> str:
    """The exact `recipes/publish.py` command that publishes this run folder with these settings.

    The arguments are `publish`'s.
    """
    parts = ["python", "recipes/publish.py", "--output_dir", str(run_dir), "--hub_model_id", hub_model_id]
    parts += ["--base_model_id", base_model_id or "OWNER/BASE"]
    options = {
        "--hub_private": None if private else "false",
        "--hub_revision": revision,
        "--hub_create_pr": "true" if create_pr else None,
        "--forget_names_file": None if forget_names_file is None else str(forget_names_file),
        "--license": license,
        "--commit_message": commit_message,
    }
    parts += [item for flag, value in options.items() if value is not None for item in (flag, value)]
    return shlex.join(parts)


def load_forget_names(run_dir: Path, forget_names_file: str | os.PathLike | None = None) -> list[str]:
    """The names the guard scans for: `<run_dir>/private/forget_names.txt` plus `forget_names_file`, if given."""
    from ..data.captions import read_name_file

    files = [p for p in (run_dir / PRIVATE_DIR / FORGET_FILE,) if p.is_file()]
    if forget_names_file is not None:
        if not Path(forget_names_file).is_file():
            raise PublishError(f"--forget_names_file {str(forget_names_file)!r} does not exist")
        files.append(Path(forget_names_file))
    if not files:
        raise PublishError(
            f"refusing to publish {run_dir}: it has no {PRIVATE_DIR}/{FORGET_FILE}, so the privacy guard has no names "
            "to check for. Pass --forget_names_file with the names that were removed (one a line)."
        )
    names = [name for f in files for name in read_name_file(f)]
    if not names:
        raise PublishError(f"refusing to publish {run_dir}: the forget list is empty ({', '.join(map(str, files))})")
    return names


def _check_ids(hub_model_id: str, base_model_id: str | None) -> None:
    if not hub_model_id or "/" not in hub_model_id or as_hub_id(hub_model_id) is None:
        raise PublishError(f"--hub_model_id must be a Hub repo id OWNER/NAME, got {hub_model_id!r}")
    if not base_model_id:
        raise PublishError(
            "refusing to publish without --base_model_id: the card's base_model and adapter_config.json must name "
            "the base model by its Hub id (e.g. --base_model_id openai/clip-vit-base-patch32)"
        )
    if as_hub_id(base_model_id) is None:
        raise PublishError(
            f"--base_model_id {base_model_id!r} is not a Hub id (a local path must never be published): pass the "
            "base's Hub id, e.g. --base_model_id openai/clip-vit-base-patch32"
        )


def _copy_allowed(src: Path, dst: Path, names: Sequence[str]) -> list[str]:
    """Copy the allow-listed files of a model folder; returns their names."""
    present = [n for n in names if (src / n).is_file()]
    present += sorted(p.name for p in src.glob("model-*-of-*.safetensors") if SHARD.fullmatch(p.name))
    dst.mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.copy2(src / name, dst / name)
    if "tokenizer_config.json" in present:
        config = json.loads((dst / "tokenizer_config.json").read_text(encoding="utf-8"))
        if any(k in config for k in _LOCAL_TOKENIZER_KEYS):
            config = {k: v for k, v in config.items() if k not in _LOCAL_TOKENIZER_KEYS}
            (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return present


def _rewrite_adapter_config(path: Path, base_model_id: str, base_revision: str | None) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model_id
    config["revision"] = base_revision
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def stage_run(
    run_dir: str | os.PathLike,
    staging: str | os.PathLike,
    *,
    base_model_id: str,
    base_revision: str | None = None,
    license: str | None = None,
    hub_model_id: str | None = None,
    include_merged: bool = True,
) -> list[str]:
    """Copy what may be published into `staging` (the run folder is only read); returns the repo paths.

    Full model: config, weights, processor/tokenizer files. Adapter: adapter_config.json (base rewritten to
    `base_model_id`) + adapter weights, and `merged/` (a full model) when saved. Plus the summary and the card.

    `base_revision` is written into the adapter's config, `license` and `hub_model_id` into the card;
    `include_merged=False` leaves an adapter run's `merged/` out.
    """
    run_dir, staging = Path(run_dir), Path(staging)
    adapter = (run_dir / "adapter_config.json").is_file()
    if adapter and not (run_dir / "adapter_model.safetensors").is_file():
        raise PublishError(f"{run_dir} has adapter_config.json but no adapter_model.safetensors")
    if not adapter and not ((run_dir / "config.json").is_file() and _has_weights(run_dir)):
        raise PublishError(
            f"{run_dir} holds no model to publish: expected config.json + model.safetensors (full model) or "
            "adapter_config.json + adapter_model.safetensors (LoRA)"
        )
    # No tokenizer next to an adapter: AutoPeftModel would then resize the base's embeddings, which CLIP refuses.
    files = _copy_allowed(run_dir, staging, ADAPTER_FILES if adapter else MODEL_FILES + PROCESSOR_FILES)
    if adapter:
        _rewrite_adapter_config(staging / "adapter_config.json", base_model_id, base_revision)
    merged = run_dir / "merged"
    has_merged = adapter and include_merged and (merged / "config.json").is_file() and _has_weights(merged)
    if has_merged:
        files += [f"merged/{n}" for n in _copy_allowed(merged, staging / "merged", MODEL_FILES + PROCESSOR_FILES)]
    if (run_dir / SUMMARY_FILE).is_file():
        shutil.copy2(run_dir / SUMMARY_FILE, staging / SUMMARY_FILE)
        files.append(SUMMARY_FILE)
    stage_card(staging, base_model_id=base_model_id, license=license, hub_model_id=hub_model_id)
    return sorted([*files, CARD_FILE])


def stage_card(staging: Path, *, base_model_id: str, license: str | None, hub_model_id: str | None) -> Path:
    """(Re)write the staged README.md from the staged summary and files.

    `base_model_id`, `license` and `hub_model_id` are as in `render_model_card`.
    """
    card = render_model_card(
        read_summary(staging),
        base_model_id=base_model_id,
        adapter=(staging / "adapter_config.json").is_file(),
        license=license,
        hub_model_id=hub_model_id,
        has_merged=(staging / "merged" / "config.json").is_file(),
    )
    card.save(staging / CARD_FILE)
    return staging / CARD_FILE


def _has_weights(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()


def _default_message(run_dir: Path) -> str:
    n = (read_summary(run_dir).get("defense") or {}).get("num_forgotten")
    removed = f"{n} {'person' if n == 1 else 'people'}" if isinstance(n, int) else "people"
    return f"Upload CLIP with {removed} removed by backdoor unlearning (hf_privacy_backdoor)"


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


class HubUnavailable(PushFailed):
    """Offline, no answer, or the token refused: retrying the same command later can work."""


def probe_hub(api) -> None:
    """Fail fast (a few seconds) when offline, when the Hub does not answer, or when the token is refused."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, get_session

    if constants.is_offline_mode():
        raise HubUnavailable("cannot publish in offline mode: HF_HUB_OFFLINE is set. Unset it (or set it to 0).")
    url = f"{api.endpoint}/api/whoami-v2"
    start = time.monotonic()
    try:
        response = get_session().get(url, headers=build_hf_headers(token=api.token), timeout=PROBE_TIMEOUT)
    except Exception as err:  # connection refused, DNS, timeout, proxy: all mean "no Hub here"
        raise HubUnavailable(
            f"the Hub at {api.endpoint} is unreachable ({type(err).__name__} after {time.monotonic() - start:.1f} s). "
            "Check the network and HF_ENDPOINT."
        ) from None
    if response.status_code == 401:
        raise HubUnavailable(
            f"the Hub at {api.endpoint} refused the token (401): log in with `hf auth login` or set HF_TOKEN "
            "to a token with write access"
        )
    if response.status_code >= 500:
        raise HubUnavailable(f"the Hub at {api.endpoint} is not answering normally (HTTP {response.status_code})")


def _adopt_base_license(api, staging: Path, base_model_id: str, hub_model_id: str, names: Sequence[str]) -> None:
    """Give the staged card the base model's license, when its card on the Hub names one."""
    try:
        data = api.model_info(base_model_id).card_data
    except Exception:  # not on the Hub, no access: the license is simply unknown
        return
    license = getattr(data, "license", None) if data is not None else None
    if isinstance(license, str):
        card = stage_card(staging, base_model_id=base_model_id, license=license, hub_model_id=hub_model_id)
        refuse_on_names({CARD_FILE: card}, names, "the push")


def _ensure_repo(api, repo_id: str, private: bool, revision: str | None) -> None:
    """Create the repo (and branch) if needed; refuse a repo whose visibility differs from `private`."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.model_info(repo_id)
    except RepositoryNotFoundError:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.model_info(repo_id)
    if bool(info.private) != private:
        have, want = ("public", "private") if private else ("private", "public")
        flag = "--hub_private false" if private else "--hub_private true"
        raise PublishError(
            f"refusing to publish: {repo_id} already exists and is {have}, but a {want} push was asked for. "
            f"Nothing was uploaded. Change its visibility on the Hub first, or pass {flag} to publish it {have}."
        )
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)


def commit_with_retry(api, repo_id: str, make_operations, *, message: str, revision: str | None, create_pr: bool):
    """One `create_commit` on the current head; a 412 (someone committed meanwhile) is retried once on the new head.

    `make_operations(head)` builds the commit's operations for a head revision, so a retry rebuilds them; `api`
    is the `HfApi`, and `message`, `revision` and `create_pr` are `create_commit`'s.
    """
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in (1, 2):
        head = api.model_info(repo_id, revision=revision).sha
        try:
            return api.create_commit(
                repo_id,
                make_operations(head),
                commit_message=message,
                revision=revision,
                create_pr=create_pr,
                parent_commit=head,
            )
        except HfHubHTTPError as err:
            if _status(err) != 412 or attempt == 2:
                raise
            logger.warning("%s moved on while committing (412): retrying once on the new head", repo_id)
    raise AssertionError("unreachable")


def _push(api, staging: Path, files: list[str], repo_id: str, *, private, revision, create_pr, message):
    from huggingface_hub import CommitOperationAdd

    _ensure_repo(api, repo_id, private, revision)

    def operations(_head):
        return [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(staging / f)) for f in files]

    return commit_with_retry(api, repo_id, operations, message=message, revision=revision, create_pr=create_pr)


def _write_preview(staging: Path, run_dir: Path, preview_dir: str | os.PathLike | None) -> Path:
    preview = Path(preview_dir) if preview_dir is not None else run_dir / PREVIEW_DIR
    if preview.exists() and preview != run_dir / PREVIEW_DIR and any(preview.iterdir()):
        raise PublishError(f"preview folder {str(preview)!r} exists and is not empty: choose another --preview_dir")
    shutil.rmtree(preview, ignore_errors=True)
    shutil.copytree(staging, preview)
    return preview


def publish(
    run_dir: str | os.PathLike,
    hub_model_id: str,
    base_model_id: str | None,
    *,
    private: bool = True,
    revision: str | None = None,
    create_pr: bool = False,
    forget_names_file: str | os.PathLike | None = None,
    license: str | None = None,
    dry_run: bool = False,
    preview_dir: str | os.PathLike | None = None,
    commit_message: str | None = None,
    api=None,
    base_revision: str | None = None,
    include_merged: bool = True,
) -> PublishResult:
    """Publish a run folder (full model or LoRA adapter) to `hub_model_id` as one commit, or preview it.

    Refuses (PublishError, nothing sent) without a Hub base id, without a forget list to scan for, on any
    forgotten name in a staged file / path / repo id / branch / commit message, and on a visibility mismatch.
    A failed push raises PublishError with the exact retry command; the run folder is never changed by it.
    `dry_run` writes the staged folder to `preview_dir` (default `<run_dir>/publish_preview`) and sends nothing.

    `base_model_id` is the Hub id the card and the adapter name; `private` sets a new repo's visibility (and must
    match an existing one's); `revision` is the branch to commit to, `create_pr` opens a pull request instead;
    `forget_names_file` is the forget list to scan for when the run folder has none; `license` defaults to the base
    model's; `commit_message` is also the PR title; `api` is the `HfApi` to use (default: one with the usual token);
    `base_revision` is written into an adapter's config; `include_merged` publishes an adapter run's `merged/`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"run folder {str(run_dir)!r} does not exist")
    names = load_forget_names(run_dir, forget_names_file)
    settings = dict(private=private, revision=revision, create_pr=create_pr, forget_names_file=forget_names_file)
    settings |= dict(license=license, dry_run=dry_run, preview_dir=preview_dir, commit_message=commit_message)
    settings |= dict(api=api, base_revision=base_revision, include_merged=include_merged)
    try:
        return _publish(run_dir, names, hub_model_id, base_model_id, **settings)
    except PublishError as err:  # its message may quote a path or a server's answer: withhold lines with a name
        raise type(err)(redact(str(err), names)) from None


def _publish(
    run_dir: Path,
    names: Sequence[str],
    hub_model_id: str,
    base_model_id: str | None,
    *,
    private: bool,
    revision: str | None,
    create_pr: bool,
    forget_names_file: str | os.PathLike | None,
    license: str | None,
    dry_run: bool,
    preview_dir: str | os.PathLike | None,
    commit_message: str | None,
    api,
    base_revision: str | None,
    include_merged: bool,
) -> PublishResult:
    target = dict(private=private, revision=revision, create_pr=create_pr)
    if not (run_dir / SUMMARY_FILE).is_file():
        raise PublishError(
            f"{str(run_dir)!r} has no {SUMMARY_FILE}: the run was not evaluated, and a published model's card must "
            "carry the attack's before/after numbers. Run it with --evaluate true (the default), then publish."
        )
    message = commit_message or _default_message(run_dir)
    strings = {
        "the repo id": hub_model_id or "",
        "the base model id": base_model_id or "",
        "the branch": revision or "",
    }
    refuse_on_names({**strings, "the commit message / PR title": message}, names, "the push")
    _check_ids(hub_model_id, base_model_id)  # after the scan: its messages quote the ids
    retry = retry_command(
        run_dir,
        hub_model_id,
        base_model_id,
        forget_names_file=forget_names_file,
        license=license,
        commit_message=commit_message,
        **target,
    )
    with tempfile.TemporaryDirectory(prefix="hf_pb_publish_") as tmp:
        staging = Path(tmp)
        files = stage_run(
            run_dir,
            staging,
            base_model_id=base_model_id,
            base_revision=base_revision,
            license=license,
            hub_model_id=hub_model_id,
            include_merged=include_merged,
        )
        refuse_on_names({f: staging / f for f in files}, names, "the push")  # before any byte is sent
        api = _make_api(api)
        try:
            if not dry_run:
                probe_hub(api)  # before anything slow: an absent Hub is reported within seconds
            if license is None and (not dry_run or _reachable(api)):
                _adopt_base_license(api, staging, base_model_id, hub_model_id, names)
            if dry_run:
                return PublishResult(hub_model_id, None, files, _write_preview(staging, run_dir, preview_dir), True)
            info = _push(api, staging, files, hub_model_id, message=message, **target)
        except PublishError as err:
            if not isinstance(err, PushFailed):
                raise  # a refusal: the message says what to change
            raise PushFailed(_failure_message(hub_model_id, run_dir, err, retry)) from None
        except Exception as err:
            raise PushFailed(_failure_message(hub_model_id, run_dir, err, retry)) from err
        shutil.copyfile(staging / CARD_FILE, run_dir / CARD_FILE)  # the local card now matches the published one
    return PublishResult(hub_model_id, info.commit_url, files, None, False, pr_url=info.pr_url)


def _make_api(api):
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi()  # endpoint and token from the usual sources (HF_ENDPOINT, HF_TOKEN, the login cache)


def _reachable(api) -> bool:
    try:
        probe_hub(api)
    except HubUnavailable:
        return False
    return True


def _failure_message(repo_id: str, run_dir: Path, err: BaseException, retry: str) -> str:
    if isinstance(err, PublishError):
        cause = str(err)
    else:
        status = _status(err)
        cause = f"HTTP {status}: {err}" if status else f"{type(err).__name__}: {err}"
    return (
        f"publishing to {repo_id} failed: {cause}\n"
        f"Nothing was committed (all files go up in one commit) and {run_dir} was not changed. Retry with:\n"
        f"  {retry}"
    )


def push_metrics(
    repo_id: str,
    summary: Mapping[str, Any],
    *,
    revision: str | None = None,
    api=None,
    commit_message: str | None = None,
    forget_names: Sequence[str],
) -> str:
    """Replace the model-index and results table of an existing repo's card with `summary`'s: one commit, no weights.

    `forget_names` (required, at least one) are scanned for in the repo id, the commit message and the new card,
    and withheld from any error message. Returns the commit URL.

    `revision` is the branch to commit to, `api` the `HfApi` to use (default: one with the usual token),
    `commit_message` the commit's title.
    """
    if not forget_names:
        raise PublishError("push_metrics needs the names to scan for (forget_names): the guard has nothing to check")
    try:
        return _push_metrics(repo_id, summary, revision, api, commit_message, forget_names)
    except PublishError as err:
        raise type(err)(redact(str(err), forget_names)) from None


def _push_metrics(repo_id, summary, revision, api, commit_message, forget_names) -> str:
    from huggingface_hub import CommitOperationAdd, ModelCard
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    message = commit_message or "Update evaluation results (identity inference attack, zero-shot utility)"
    refuse_on_names({"the repo id": repo_id, "the commit message": message}, forget_names, "the metrics push")
    api = _make_api(api)
    probe_hub(api)

    def operations(head: str):
        path = api.hf_hub_download(repo_id, CARD_FILE, revision=head)
        card = update_results(ModelCard.load(path), summary)
        refuse_on_names({CARD_FILE: str(card)}, forget_names, "the metrics push")
        return [CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=str(card).encode("utf-8"))]

    try:
        info = commit_with_retry(api, repo_id, operations, message=message, revision=revision, create_pr=False)
    except PublishError:
        raise
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise PublishError(
            f"cannot update the metrics of {repo_id}: {type(err).__name__}. push_metrics updates the card of an "
            "existing repo; publish the model first (python recipes/publish.py ...)."
        ) from err
    except Exception as err:
        raise PushFailed(f"updating the metrics of {repo_id} failed ({err}); the repo was not changed") from err
    return info.commit_url
