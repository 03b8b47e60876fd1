"""Run every benchmark: each ``bench/*.py`` module's ``main()``, in name order, with its default options.

    python -m bench [NAME ...]      (e.g. python -m bench overhead audit)

Each benchmark prints its details as it runs; at the end the headline figures of all of them, with their
targets, are printed as one Markdown table with the machine they ran on (the table docs/performance.md keeps).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from ._common import Figure, machine, table


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks one after the other; returns the number that failed."""
    wanted = list(argv if argv is not None else sys.argv[1:])
    names = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    unknown = [name for name in wanted if name not in names]
    if unknown:
        print(f"no such benchmark: {', '.join(unknown)} (there are: {', '.join(names)})", file=sys.stderr)
        return 1
    failed, figures = 0, []
    for name in wanted or names:
        print(f"== bench.{name}", flush=True)
        began = time.perf_counter()
        try:
            figures.extend(importlib.import_module(f"bench.{name}").main([]) or [])
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed += 1
            figures.append(Figure(f"bench.{name}", None, "", note=f"failed: {type(exc).__name__}: {exc}"))
            print(f"bench.{name} failed: {type(exc).__name__}: {exc}", flush=True)
        print(f"== bench.{name} took {time.perf_counter() - began:.0f} s\n", flush=True)
    print(f"Figures on {machine()}:\n")
    print(table(figures), flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
