# syntax=docker/dockerfile:1
# One image per service, built from this file's targets:
#   docker build --target score-api         -t leaderboard/score-api .
#   docker build --target broadcast-gateway -t leaderboard/broadcast-gateway .
#   docker build --target persister         -t leaderboard/persister .
# The migrations Job reuses the persister image: `python -m services.persister migrate`.

# A tag, not a digest, so rebuilds pick up Debian security fixes; pin a digest in CI if you
# need byte-identical rebuilds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# Runtime dependencies only, every file checked against the lock's hashes.
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Only the code: Lua scripts, static page and SQL migrations live inside these packages.
COPY services/ /app/services/
COPY shared/ /app/shared/
# Bytecode is compiled now, because the root filesystem is read-only at run time.
RUN python -m compileall -q --invalidation-mode unchecked-hash /app/services /app/shared
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 10001:10001

FROM runtime AS score-api
ENV API_HOST=0.0.0.0 \
    API_PORT=8000
EXPOSE 8000
CMD ["python", "-m", "services.score_api"]

FROM runtime AS broadcast-gateway
ENV GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8001
EXPOSE 8001
CMD ["python", "-m", "services.broadcast_gateway"]

FROM runtime AS persister
# pg_dump and pg_restore for `persister backup` / `restore` (the backup CronJob). Bookworm's
# client is PostgreSQL 15, which dumps servers up to 15; for a newer server build with
# POSTGRES_CLIENT=postgresql-client-NN from the PostgreSQL apt repository (apt.postgresql.org).
ARG POSTGRES_CLIENT=postgresql-client
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends ${POSTGRES_CLIENT} \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
ENV PERSISTER_METRICS_HOST=0.0.0.0 \
    PERSISTER_METRICS_PORT=8002
EXPOSE 8002
CMD ["python", "-m", "services.persister"]
