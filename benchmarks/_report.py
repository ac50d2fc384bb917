"""Shared output of the benchmark scripts: one aligned table on stdout, every number in a JSON file."""

import json
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
