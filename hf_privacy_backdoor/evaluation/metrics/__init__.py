"""Local `evaluate` metric modules shipped with the package (loadable offline with `evaluate.load(path)`)."""

from pathlib import Path


IDIA_METRIC_PATH = str(Path(__file__).parent / "idia")
