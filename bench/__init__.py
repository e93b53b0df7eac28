"""The benchmark suite behind ``make bench``.

What will live here: producer/consumer load generators and the report they
write under ``bench/out/`` (ignored by git).

May import: ``client``, plus stdlib and third-party libraries. The cluster
under test runs as separate processes (DESIGN.md, checked by
tests/test_layout.py).
"""
