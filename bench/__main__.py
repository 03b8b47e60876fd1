"""Run every benchmark: each ``bench/*.py`` module's ``main()``, in name order, with its default options.

    python -m bench [--quick] [NAME ...]      (e.g. python -m bench overhead audit)

Each benchmark prints its details as it runs; at the end the headline figures of all of them are printed as
one Markdown table with the machine they ran on (the table docs/performance.md keeps): each figure with its
earlier measurement (``bench._common.BEFORE``), the new one, its target and whether it is met.

``--quick`` runs each benchmark smaller (``QUICK``: a tenth of the therapies and entries, fewer requests, one
throughput run of 5 s per configuration): to check that everything runs, not for the figures. Each benchmark
also runs alone, ``python -m bench.NAME --help``.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from ._common import Figure, machine, table

# What --quick gives each benchmark instead of its defaults.
QUICK = {
    "audit": ["--entries", "100000", "--seconds", "2"],
    "booking": ["--slots", "200", "--clients", "16", "--options-slots", "2000", "--options-bookings", "1000"],
    "broker": ["--therapies", "50", "--events", "500"],
    "long_instances": ["--days", "100"],
    "overhead": ["--journeys", "5", "--warmup", "1"],
    "scale": ["--therapies", "10000", "--active", "1000", "--requests", "50"],
    "throughput": ["--duration", "5", "--repeat", "1"],
    "timers": ["--timers", "2000", "--due", "300", "--window", "10", "--lead", "5", "--burst", "300"],
    "tower": ["--therapies", "4000", "--active", "2000", "--requests", "50"],
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks one after the other; returns the number that failed."""
    wanted = list(argv if argv is not None else sys.argv[1:])
    quick = "--quick" in wanted
    wanted = [name for name in wanted if name != "--quick"]
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
            options = QUICK.get(name, []) if quick else []
            figures.extend(importlib.import_module(f"bench.{name}").main(options) or [])
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
