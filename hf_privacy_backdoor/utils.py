"""Small shared helpers: seeding, cache locations, atomic writes."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so that the same seed gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def cache_root() -> Path:
    """Where built worlds and models are cached (outside the repo).

    `HF_PRIVACY_BACKDOOR_CACHE` wins; otherwise `$XDG_CACHE_HOME/hf_privacy_backdoor` or `~/.cache/...`.
    """
    env = os.environ.get("HF_PRIVACY_BACKDOOR_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hf_privacy_backdoor"


@contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to `final` only if the block succeeds.

    Nothing half-written is ever left at `final`: on error the temporary directory is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def ordered_process_map(fn, items: list, workers: int, threads: int | None = None) -> Iterator[Any]:
    """`fn(item)` for each item, yielded in the items' order. With `workers` > 1 (and more than one item) the
    calls run in that many spawned processes (a clean interpreter each, `threads` torch threads each: by default
    the cores shared out), and a result is yielded once it and those before it are done. `fn` must be importable
    (a module-level function). The first failure cancels the calls not yet started and is raised."""
    for results in ordered_process_chain(fn, items, workers, threads=threads):
        yield results[0]


def ordered_process_chain(
    fn,
    items: list,
    workers: int,
    then: Callable[[int, Any], tuple[Callable, Any] | None] | None = None,
    start_order: Sequence[int] | None = None,
    threads: int | None = None,
) -> Iterator[list[Any]]:
    """`fn(item)` for each item and, as soon as that is done, an optional second call: `then(index, result)`
    (run in this process) returns `(fn2, arg)` to run next, in whichever worker is free, or None. Yields, in the
    items' order, `[result]` or `[result, fn2(arg)]` per item, each once it and those before it are done.

    `start_order` (indices) is the order the first calls are queued in (default: the items'); second calls
    queue behind the first calls not yet started. Processes as in `ordered_process_map`; the first failure
    cancels what has not started and is raised. With `workers` 1 everything runs here, item after item."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    order = list(range(len(items))) if start_order is None else list(start_order)
    if sorted(order) != list(range(len(items))):
        raise ValueError(f"start_order must be a permutation of 0..{len(items) - 1}, got {order}")
    if workers == 1 or len(items) < 2:
        for i, item in enumerate(items):
            results = [fn(item)]
            follow = then(i, results[0]) if then else None
            if follow is not None:
                results.append(follow[0](follow[1]))
            yield results
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    workers = min(workers, len(items))
    threads = threads or int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)
    ) as ex:
        stage = {ex.submit(fn, items[i]): (i, 0) for i in order}
        results: list[list[Any]] = [[] for _ in items]
        finished, broken = [False] * len(items), [False] * len(items)
        pending, next_out, failure = set(stage), 0, None
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: stage[f]):
                    i, step = stage[future]
                    error = None if future.cancelled() else future.exception()
                    if future.cancelled() or error is not None:
                        finished[i] = broken[i] = True
                        if failure is None and error is not None:
                            failure = error
                            for other in pending:
                                other.cancel()
                        continue
                    results[i].append(future.result())
                    follow = then(i, results[i][0]) if step == 0 and then else None
                    if follow is None:
                        finished[i] = True
                    elif failure is not None:  # nothing new starts after a failure
                        finished[i] = broken[i] = True
                    else:
                        second = ex.submit(*follow)
                        stage[second] = (i, 1)
                        pending.add(second)
                while next_out < len(items) and finished[next_out]:
                    if broken[next_out]:
                        raise failure
                    yield results[next_out]
                    next_out += 1
            if failure is not None:
                raise failure
        finally:
            for future in stage:
                future.cancel()
