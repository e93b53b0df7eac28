"""Suite-wide pytest setup."""

from __future__ import annotations

import os

from hypothesis import settings

# No per-example deadline: timings vary too much under `pytest -n 2` on shared
# CI machines, and pytest-timeout already bounds every test. print_blob makes a
# failure print the @reproduce_failure line. Override with HYPOTHESIS_PROFILE.
settings.register_profile("raftlog", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "raftlog"))
