# syntax=docker/dockerfile:1
#
# dataservice gRPC server image.
#
#   docker build -t dataservice .
#   docker run --rm -p 50051:50051 -e DATABASE_URL=... -e REDIS_URL=... dataservice
#
# Stage 1 builds a self-contained virtualenv at /opt/venv containing the
# generated client/stub package (clients/python -> `dataservice`) and the
# server package (`server`). Stage 2 copies only that venv plus the SQL
# migrations onto a clean slim base and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

############################
# Builder
############################
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
COPY . .

# Non-editable install so the venv does not reference /src at runtime.
RUN pip install --no-cache-dir ./clients/python .

############################
# Runtime
############################
FROM ${PYTHON_IMAGE} AS runtime

# Pinned grpc_health_probe release; TARGETARCH is supplied by BuildKit
# (amd64 / arm64), so multi-platform builds fetch the matching binary.
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.39
ARG TARGETARCH

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="dataservice" \
      org.opencontainers.image.description="gRPC data-access microservice"

RUN groupadd --system --gid "${APP_GID}" app \
    && useradd --system --uid "${APP_UID}" --gid app \
       --home-dir /app --no-create-home --shell /usr/sbin/nologin app

ADD --chmod=0755 \
    https://github.com/grpc-ecosystem/grpc-health-probe/releases/download/${GRPC_HEALTH_PROBE_VERSION}/grpc_health_probe-linux-${TARGETARCH} \
    /usr/local/bin/grpc_health_probe

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY --chown=root:root migrations/ /app/migrations/

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_ADDRESS="[::]:50051" \
    MIGRATIONS_DIR=/app/migrations \
    LOG_LEVEL=INFO

USER ${APP_UID}:${APP_GID}

# 50051: gRPC, 9090: Prometheus metrics (served only when METRICS_PORT is set).
EXPOSE 50051 9090

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["grpc_health_probe", "-addr=localhost:50051", "-connect-timeout=2s", "-rpc-timeout=2s"]

CMD ["python", "-m", "server"]
