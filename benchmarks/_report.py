"""Shared output of the benchmark scripts: one aligned table on stdout, every number in a JSON file."""

import json
import os
import platform
import time
from pathlib import Path


def print_table_and_save(rows: list[dict], keys: list[str], report: dict, output: str) -> None:
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(str(r[k]).rjust(w) for k, w in zip(keys, widths)))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {path}")


def machine_info(**extra) -> dict:
    """What every benchmark JSON records about the machine (versions, threads, cores, GPU), plus `extra`."""
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return {**info, **extra}


def run_cells(fn, cells: list, workers: int, label=None) -> list:
    """`fn` over `cells`, in `workers` spawned processes when there is more than one of each (results in order).

    With `label` (cell -> str), a line per finished cell says which, how many are done and the time so far."""
    start = time.perf_counter()

    def done(count: int, cell) -> None:
        if label is not None:
            print(f"[{count}/{len(cells)}] {label(cell)} done ({time.perf_counter() - start:.0f} s)", flush=True)

    if workers > 1 and len(cells) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(workers, len(cells)), mp_context=multiprocessing.get_context("spawn")) as ex:
            futures = {ex.submit(fn, cell): i for i, cell in enumerate(cells)}
            results = [None] * len(cells)
            for count, future in enumerate(as_completed(futures), 1):
                results[futures[future]] = future.result()
                done(count, cells[futures[future]])
            return results
    results = []
    for cell in cells:
        results.append(fn(cell))
        done(len(results), cell)
    return results
