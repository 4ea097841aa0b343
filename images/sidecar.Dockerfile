# syntax=docker/dockerfile:1
# The state API server (`statestore-sidecar`), the image the operator runs for every state store Component.
#
#   docker build -f images/sidecar.Dockerfile -t statestore-sidecar:0.1.0 .     # from the repository root
#
# Stage 1 installs the runtime dependencies (binary wheels only, no compiler, no test extras) and this
# project's wheel into a virtualenv; stage 2 is the base plus that virtualenv.
# BASE chooses the base of both stages: by default the official slim Python image (published builds);
# `make images` passes a Debian bookworm base it bootstraps from Debian's packages (hack/images/build.sh).
# Any base with python3 >= 3.11 and its venv module (ensurepip) works.
# Runtime contract (what the operator's Deployments and the Helm chart rely on):
#   - runs as the numeric non-root user 65532:65532 and never writes to the root filesystem:
#     /tmp is an emptyDir, SQLite data goes to a mounted volume (the operator mounts /var/lib/statestore);
#   - health: Kubernetes probes, not a Docker HEALTHCHECK (no curl in the image):
#       readinessProbe  GET /v1.0/healthz on port 3500 (204 while every store's backend answers)
#       livenessProbe   GET /livez        on port 3500 (204 while the process serves HTTP)
#   - ports: 3500 (state API), 9090 (Prometheus metrics).

ARG BASE=docker.io/library/python:3.11.14-slim-bookworm

FROM ${BASE} AS build
# Optional: the index and a CA bundle for pip, e.g. behind a TLS-inspecting proxy (build stage only).
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# pip runs from a throwaway virtualenv (the base's own Python may have no pip, as Debian's).
# The runtime dependencies (binary wheels only, no compiler) go first, in a layer of their own that
# is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python3 -m venv /opt/pip \
 && python3 -m venv --without-pip /opt/statestore \
 && python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' >/tmp/requirements.txt \
 && /opt/pip/bin/python -m pip --python /opt/statestore/bin/python install --only-binary=:all: -r /tmp/requirements.txt
COPY README.md ./
COPY sidecar/ sidecar/
COPY operator/ operator/
RUN /opt/pip/bin/python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/pip/bin/python -m pip --python /opt/statestore/bin/python install --no-deps /wheels/*.whl \
 && /opt/pip/bin/python -m pip --python /opt/statestore/bin/python check

FROM ${BASE}
LABEL org.opencontainers.image.title="statestore-sidecar" \
      org.opencontainers.image.description="Dapr-compatible state HTTP API server" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/statestore /opt/statestore
# Bytecode was compiled at install time; never try to write .pyc files at run time (read-only root).
ENV PATH=/opt/statestore/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Relative SQLite paths resolve here; mount a volume on it (the operator mounts an emptyDir).
WORKDIR /var/lib/statestore
USER 65532:65532
EXPOSE 3500 50001 9090
ENTRYPOINT ["statestore-sidecar"]
