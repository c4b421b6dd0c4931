"""Benchmarks of callrec against a dialplan-only recorder on the same Asterisk build.

`python -m bench` (or `make bench`) runs every benchmark, prints a table and writes
`bench/results/latest.json`. See bench/README.md."""
