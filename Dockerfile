# raftlog container image: one `raftlog` entry point for nodes
# (`serve ...`), the flag server (`flags serve ...`) and the CLI.
#
# Invariants (tests/image/test_dockerfile.py checks them, and hadolint):
# - BASE_IMAGE is declared before the first FROM, and both stages start from
#   it, so the venv built in the first stage runs on the very Python it was
#   built with (its bin/python is a symlink to the base's interpreter).
# - The final stage receives only /opt/raftlog (the venv): no compiler, no
#   apt lists, no pip cache, no source tree, no pip/setuptools in the venv.
# - The process runs as uid/gid 10001, never root; the only place it may
#   write is /var/lib/raftlog (data dirs: the chart mounts its PVC there).
# - The generated protobuf code (gitignored) is generated here, by the same
#   grpc_tools.protoc invocation as `make proto`, before the wheel is built,
#   and the build fails unless the installed venv imports it.
# - HEALTHCHECK (and the chart's TLS probes) run `python -P -m
#   cluster.cli_health`, the chart's init container `python -P -m
#   cluster.cli_zone`: the build proves both modules start.
#
# Build: `make image` (buildah), or `docker build --build-arg BASE_IMAGE=... .`

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A C toolchain only for a dependency that has no wheel for this platform
# (every runtime dependency ships manylinux wheels for x86_64/aarch64 today,
# so this is a fallback; the final stage never sees it).
# The Debian versions are not pinned: the base image decides which bookworm
# point release we get, and a pinned version disappears from the mirror at
# the next security update, breaking the build for no gain in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The protobuf compiler that `make proto` runs (grpcio-tools is also a
# runtime dependency, so the project install below keeps this version).
ARG GRPCIO_TOOLS_VERSION=1.85.4

RUN python -m venv /opt/raftlog \
 && /opt/raftlog/bin/pip install "grpcio-tools==${GRPCIO_TOOLS_VERSION}"

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps out .venv, data,
# tests and any locally generated *_pb2 files).
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY raft ./raft
COPY partitions ./partitions
COPY cluster ./cluster
COPY client ./client
COPY flags ./flags
COPY harness ./harness
COPY chaos ./chaos
COPY bench ./bench

# Generate the *_pb2 code beside each .proto, exactly as `make proto` does.
RUN find proto -name '*.proto' -print0 \
    | xargs -0 -n1 /opt/raftlog/bin/python -m grpc_tools.protoc -Iproto \
        --python_out=proto --pyi_out=proto --grpc_python_out=proto

# Build the wheel (setuptools maps the `raftlog` package to proto/raftlog,
# generated code included), install it with its runtime dependencies and
# drop the installers the runtime does not need. Then prove, from outside
# the source tree and without pip/setuptools, that the generated code was
# packaged, the node/flag-server/telemetry modules import and the entry
# point starts: a broken wheel fails the build, not the first pod.
RUN /opt/raftlog/bin/pip wheel --no-deps --wheel-dir /tmp/dist . \
 && /opt/raftlog/bin/pip install /tmp/dist/raftlog-*.whl \
 && /opt/raftlog/bin/pip uninstall -y pip setuptools \
 && rm -rf /tmp/dist
WORKDIR /
RUN /opt/raftlog/bin/python -c "import raftlog.v1.log_pb2_grpc, raftlog.internal.v1.raft_pb2, \
cluster.cli, cluster.node, flags.cli, opentelemetry.instrumentation.grpc, prometheus_client" \
 && /opt/raftlog/bin/raftlog --help > /dev/null \
 && /opt/raftlog/bin/python -P -m cluster.cli_health --help > /dev/null \
 && /opt/raftlog/bin/python -P -m cluster.cli_zone --help > /dev/null

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# Re-declared so the label below can name the base (an ARG before the first
# FROM is only in scope for the FROM lines).
ARG BASE_IMAGE
ARG VERSION=0.1.0.dev0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="raftlog" \
      org.opencontainers.image.description="A multi-tenant, Raft-replicated log cluster: nodes, flag server and CLI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and
# the chart's fsGroup/runAsUser can name it.
# (Not --system: Debian's system range ends at 999.)
RUN groupadd --gid 10001 raftlog \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/raftlog \
        --no-create-home --shell /usr/sbin/nologin raftlog \
 && mkdir -p /var/lib/raftlog \
 && chown 10001:10001 /var/lib/raftlog \
 && chmod 0750 /var/lib/raftlog

COPY --from=build /opt/raftlog /opt/raftlog

# Bytecode was compiled at install time; a read-only root filesystem could
# not take new .pyc files anyway. Unbuffered: log lines reach the runtime
# as they are written.
ENV PATH=/opt/raftlog/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /var/lib/raftlog
USER 10001:10001

# gRPC (public and internal surface), Prometheus /metrics.
EXPOSE 7001 9090

# Standard gRPC health on the node's port: exit 0 iff SERVING. Kubernetes
# ignores this (the chart has native gRPC probes); docker/podman use it.
# start-period: RocksDB recovery of a large data dir may take a while.
# The health module alone (`raftlog health` without the rest of the CLI:
# about 0.19 s a check against 0.57 s); -P keeps the working directory (the
# data dir) off the module path.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-P", "-m", "cluster.cli_health", "--address", "127.0.0.1:7001"]

ENTRYPOINT ["raftlog"]
CMD ["--help"]
