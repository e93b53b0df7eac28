"""The raftlog test suite (a regular package, so ``tests`` can never be shadowed
by a stray top-level ``tests`` from site-packages)."""
