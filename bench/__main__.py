"""Run every benchmark: each ``bench/*.py`` module's ``main()``, in name order, with its default options."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main() -> int:
    """Run the benchmarks one after the other; returns the number that failed."""
    failed = 0
    names = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    for name in names:
        print(f"== bench.{name}", flush=True)
        began = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            print(f"bench.{name} failed: {type(exc).__name__}: {exc}", flush=True)
        print(f"== bench.{name} took {time.perf_counter() - began:.0f} s\n", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
