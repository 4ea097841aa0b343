# syntax=docker/dockerfile:1
# The operator (`statestore-operator`, kopf), as the Helm chart in charts/statestore-operator runs it.
#
#   docker build -f images/operator.Dockerfile -t statestore-operator:0.1.0 .     # from the repository root
#
# Stage 1 installs the runtime dependencies (binary wheels only, no compiler, no test extras) and this
# project's wheel into a virtualenv; stage 2 is the base plus that virtualenv.
# BASE chooses the base of both stages: by default the official slim Python image (published builds);
# `make images` passes a Debian bookworm base it bootstraps from Debian's packages (hack/images/build.sh).
# Any base with python3 >= 3.11 and its venv module (ensurepip) works.
# Runtime contract (what the chart relies on):
#   - runs as the numeric non-root user 65532:65532 with a read-only root filesystem (/tmp is an emptyDir;
#     the webhook certificate is a mounted Secret);
#   - health: a Kubernetes livenessProbe on kopf's endpoint (the chart passes
#     --liveness=http://0.0.0.0:8080/healthz) and, with the webhook on, a readinessProbe on the webhook
#     port; no Docker HEALTHCHECK (no curl in the image);
#   - ports: 8080 (liveness), 9090 (Prometheus metrics, --metrics-port), 9443 (validating webhook).

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
LABEL org.opencontainers.image.title="statestore-operator" \
      org.opencontainers.image.description="Validates Dapr state store Components and runs their state API" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/statestore /opt/statestore
# Bytecode was compiled at install time; never try to write .pyc files at run time (read-only root).
ENV PATH=/opt/statestore/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 65532:65532
EXPOSE 8080 9090 9443
ENTRYPOINT ["statestore-operator"]
