# raftlog developer commands (GNU make). `make test` is what CI runs.
#
# How the code becomes importable:
# - .venv is a plain `python3 -m venv`; `pip install -e '.[dev]'` installs the
#   project in editable mode. Top-level packages raft, partitions, cluster,
#   client, chaos, bench come from the repo root, and `raftlog` (the generated
#   protobuf code) from proto/raftlog (see [tool.setuptools.packages.find] in
#   pyproject.toml). So `import raft` and `import raftlog.v1.errors_pb2` work
#   from any directory with .venv/bin/python.
# - pytest also puts the repo root and proto/ on sys.path (pythonpath in
#   pyproject.toml), so the tests do not depend on the install mechanism.
# - The install reruns only when pyproject.toml changes (stamp file below).
#   A new top-level package needs a reinstall: `touch pyproject.toml`.
#
# Generated protobuf code (*_pb2.py, *_pb2.pyi, *_pb2_grpc.py) is written
# beside each .proto under proto/ by `make proto` and never committed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Only folders that exist are linted (flags/ arrives later).
PY_DIRS := $(wildcard raft partitions cluster client harness flags chaos bench tests)

PROTOS := $(shell find proto -name '*.proto' 2>/dev/null)
# Hand-written contract modules beside the generated code (record batch codec,
# header names, error reasons): linted and type-checked like the rest.
CONTRACT := $(shell find proto -name '*.py' ! -name '*_pb2*.py' ! -name '__init__.py' 2>/dev/null)
GENERATED := $(foreach p,$(PROTOS:.proto=),$(p)_pb2.py $(p)_pb2.pyi $(p)_pb2_grpc.py)

.DEFAULT_GOAL := help
.PHONY: help venv proto lint fmt test test-tools sim crash kill-drill run bench bench-quick chaos chaos-smoke image clean

help:
	@echo "make test    venv + proto + lint + the whole test suite (what CI runs)"
	@echo "make sim     the Raft simulator over seeds 1-2000, all profiles"
	@echo "make crash   storage crash test: 50 SIGKILLs of a group-commit writer"
	@echo "make kill-drill  3 node processes, 200 SIGKILLs of the leader mid-stream"
	@echo "make fuzz    every public method of one node fuzzed, 5000 random examples per property"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make fmt     ruff format and ruff check --fix"
	@echo "make proto   generate Python code from proto/**/*.proto"
	@echo "make venv    create .venv and install the project with dev extras"
	@echo "make run     a local 3-node cluster on loopback, data in ./data (TLS=1: with TLS and mTLS)"
	@echo "make bench   throughput, latency, failover, density and this machine's limits -> bench/out/latest.json (<15 min)"
	@echo "make bench-quick  the same figures, fewer repetitions (<3 min), same file"
	@echo "make chaos   failover drills: every nemesis, rounds filling 420 s of scheduled faults (prints a seed to replay)"
	@echo "make chaos-smoke  a short drill (leader kill, pause, partition), 18-40 s of scheduled faults"
	@echo "make image   the container image (Dockerfile) with buildah; not in CI"
	@echo "make clean   remove .venv, generated code and caches"

venv: $(STAMP)

# Debian/Ubuntu ship `venv` without `ensurepip` unless python3.X-venv is
# installed; without it `python3 -m venv` fails. Install it when we can
# (root with apt-get, as on CI), otherwise say what to do.
$(STAMP): pyproject.toml
	@if ! $(PYTHON) -c 'import ensurepip, venv; ensurepip.version()' >/dev/null 2>&1; then \
	  pkg=python$$($(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "$(PYTHON) cannot create virtual environments; installing $$pkg"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$pkg; \
	  else \
	    echo "error: $(PYTHON) cannot create virtual environments (no ensurepip)." >&2; \
	    echo "Install $$pkg (e.g. sudo apt-get install $$pkg) and rerun." >&2; \
	    exit 1; \
	  fi; \
	fi
	@# A venv left without pip by an earlier failed attempt is rebuilt.
	@if [ ! -x $(VENV)/bin/pip ]; then \
	  echo "$(PYTHON) -m venv $(VENV)" && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -e '.[dev]'
	@touch $@

proto: $(GENERATED)

# One protoc run writes all three outputs of a .proto (a grouped pattern rule).
%_pb2.py %_pb2.pyi %_pb2_grpc.py: %.proto $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto $<

lint: venv proto
	$(VENV)/bin/ruff check $(PY_DIRS) proto
	$(VENV)/bin/ruff format --check $(PY_DIRS) proto
	$(VENV)/bin/mypy $(PY_DIRS) $(CONTRACT)

fmt: venv
	$(VENV)/bin/ruff format $(PY_DIRS) proto
	$(VENV)/bin/ruff check --fix $(PY_DIRS) proto

# Debian tools the suite runs (not Python packages): promtool (package
# prometheus) checks every /metrics page (tests/telemetry/) and the chart's
# rules (tests/helm/). Installed with apt-get where we are root (CI);
# elsewhere this target fails with what to do: the tests that need promtool
# fail without it (tests/tools.py), and make test should stop here instead.
test-tools:
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing promtool (Debian package prometheus)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus || exit 1; \
	  else \
	    echo "error: promtool not found and cannot install it here (needs root and apt-get):" \
	      "install Debian package prometheus (sudo apt-get install prometheus) or put promtool on PATH" >&2; \
	    exit 1; \
	  fi; \
	  command -v promtool >/dev/null 2>&1 || { echo "error: promtool still not on PATH after installing prometheus" >&2; exit 1; }; \
	fi

test: venv proto lint test-tools
	$(PY) -m pytest -n 2 tests

# The storage crash test, long form (make test runs 3 iterations).
crash: venv proto
	RAFTLOG_CRASH_ITERATIONS=50 $(PY) -m pytest tests/partitions/test_crash.py -q -p no:cacheprovider

# The leader-kill drill, long form (make test runs 20 rounds).
kill-drill: venv proto
	RAFTLOG_KILL_ROUNDS=200 $(PY) -m pytest tests/integration/test_leader_kill.py -q -s -p no:cacheprovider -k sigkill

# The public-API fuzz test, long form (make test runs a short derandomized one).
.PHONY: fuzz
fuzz: venv proto
	RAFTLOG_FUZZ_EXAMPLES=5000 $(PY) -m pytest tests/integration/test_fuzz_public_api.py -q -p no:cacheprovider

sim: venv
	$(PY) -m raft.sim --seeds 1-2000 --profile all

# TLS=1: TLS for clients and mTLS between the nodes, development
# certificates in data/certs (cluster/run_local.py); plaintext otherwise.
run: venv proto
	$(PY) -m cluster.run_local --data data $(if $(filter 1,$(TLS)),--tls)

# Data goes under bench/out (the project's disk, not a tmpfs /tmp); see bench/README.md.
bench: venv proto
	$(PY) -m bench --dir bench/out --out bench/out/latest.json

bench-quick: venv proto
	$(PY) -m bench --quick --dir bench/out --out bench/out/latest.json

# Failover drills (chaos/README.md). make test runs the smoke drill too
# (tests/chaos/test_chaos_smoke.py). Replay one: python -m chaos ... --seed N.
chaos: venv proto
	$(PY) -m chaos --schedule full --report $${TMPDIR:-/tmp}/raftlog-chaos-report.json

chaos-smoke: venv proto
	$(PY) -m chaos --schedule smoke --report $${TMPDIR:-/tmp}/raftlog-chaos-smoke-report.json

# The container image (Dockerfile), built without a daemon: buildah with
# the vfs driver and chroot isolation works unprivileged in a container.
# BASE_IMAGE=... builds from a local base. Not part of CI (no registry here).
# --format docker: the OCI image format has no HEALTHCHECK field (buildah
# drops it with a warning); the Docker format keeps it.
IMAGE ?= raftlog:dev
BASE_IMAGE ?= python:3.11-slim-bookworm
image:
	@command -v buildah >/dev/null 2>&1 || { echo "make image needs buildah (apt-get install buildah)" >&2; exit 1; }
	buildah --storage-driver vfs bud --isolation chroot --format docker \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  -t $(IMAGE) -f Dockerfile .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find proto -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' | xargs rm -f
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
