"""Benchmarks: ``python -m bench`` runs each module's ``main()``; ``python -m bench.NAME`` runs one with options."""
