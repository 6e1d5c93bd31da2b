# Every image of Mercato, one target per image, built from the repository root (the uv
# workspace and its one lockfile). MEMBER names the workspace member (its directory)
# whose locked dependencies and code go into the image; the target of the same name
# sets the image's metadata, ports, healthcheck and default process:
#   docker build --build-arg MEMBER=order-service --target order-service -t mercato/order-service:dev .
# `make images` builds them all. PYTHON_IMAGE and UV_IMAGE select the bases: the
# official images by default, local stand-ins offline (deploy/compose/offline/).
# No `# syntax=` line: BuildKit would pull its frontend image; the built-in one does.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
ARG MEMBER
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
RUN test -n "$MEMBER" || { echo "build with --build-arg MEMBER=<member directory>" >&2; exit 1; }
# Dependencies first, from the lockfile and the members' metadata only, so that a
# source change does not invalidate this layer.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY gateway/pyproject.toml gateway/
COPY order-service/pyproject.toml order-service/
COPY inventory-service/pyproject.toml inventory-service/
COPY payment-service/pyproject.toml payment-service/
COPY notification-service/pyproject.toml notification-service/
COPY ops/pyproject.toml ops/
COPY payment-sandbox/pyproject.toml payment-sandbox/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --package "mercato-$MEMBER"
COPY shared/src shared/src
COPY ${MEMBER}/src ${MEMBER}/src
# --no-editable: the venv holds the code itself, so the runtime stage needs no sources.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package "mercato-$MEMBER"

FROM ${PYTHON_IMAGE} AS runtime
ARG MEMBER
LABEL org.opencontainers.image.source="https://github.com/mercato/mercato" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mercato \
    && useradd --system --uid 10001 --gid mercato --no-create-home --home-dir /nonexistent mercato
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Every console script of the member imports: a dependency the member uses but does
# not declare (present natively, where the whole workspace is installed) fails here.
RUN python -c "import importlib.metadata as m, sys; [e.load() for e in m.distribution('mercato-' + sys.argv[1]).entry_points if e.group == 'console_scripts']" "$MEMBER"
USER 10001:10001

# --- the images ---------------------------------------------------------------------
# Each target first checks that the venv holds every process it is meant to run: a
# wrong MEMBER or a console script missing from a pyproject.toml fails the build.
# No curl in slim images: the healthchecks probe the process's own port with Python.

FROM runtime AS gateway
LABEL org.opencontainers.image.title="gateway"
RUN test -x /opt/venv/bin/gateway
ENV GATEWAY_HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '8080') + '/healthz', timeout=2)"]
CMD ["gateway"]

# The domain services: one image, three processes chosen by command (<service>-api by
# default, <service>-worker, <service>-migrate). The healthcheck passes when the api's
# port or the worker's answers /healthz, whichever process the container runs.

FROM runtime AS order-service
LABEL org.opencontainers.image.title="order-service"
RUN test -x /opt/venv/bin/order-api && test -x /opt/venv/bin/order-worker && test -x /opt/venv/bin/order-migrate
ENV ORDER_API_HOST=0.0.0.0 \
    ORDER_WORKER_HOST=0.0.0.0
EXPOSE 8001 9101
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nfor port in (os.environ.get('ORDER_API_PORT', '8001'), os.environ.get('ORDER_WORKER_PORT', '9101')):\n    try:\n        urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
CMD ["order-api"]

FROM runtime AS inventory-service
LABEL org.opencontainers.image.title="inventory-service"
RUN test -x /opt/venv/bin/inventory-api && test -x /opt/venv/bin/inventory-worker && test -x /opt/venv/bin/inventory-migrate
ENV INVENTORY_API_HOST=0.0.0.0 \
    INVENTORY_WORKER_HOST=0.0.0.0
EXPOSE 8002 9102
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nfor port in (os.environ.get('INVENTORY_API_PORT', '8002'), os.environ.get('INVENTORY_WORKER_PORT', '9102')):\n    try:\n        urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
CMD ["inventory-api"]

FROM runtime AS payment-service
LABEL org.opencontainers.image.title="payment-service"
RUN test -x /opt/venv/bin/payment-api && test -x /opt/venv/bin/payment-worker && test -x /opt/venv/bin/payment-migrate
ENV PAYMENT_API_HOST=0.0.0.0 \
    PAYMENT_WORKER_HOST=0.0.0.0
EXPOSE 8003 9103
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nfor port in (os.environ.get('PAYMENT_API_PORT', '8003'), os.environ.get('PAYMENT_WORKER_PORT', '9103')):\n    try:\n        urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
CMD ["payment-api"]

FROM runtime AS notification-service
LABEL org.opencontainers.image.title="notification-service"
RUN test -x /opt/venv/bin/notification-api && test -x /opt/venv/bin/notification-worker && test -x /opt/venv/bin/notification-migrate
ENV NOTIFICATION_API_HOST=0.0.0.0 \
    NOTIFICATION_WORKER_HOST=0.0.0.0
EXPOSE 8004 9104
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nfor port in (os.environ.get('NOTIFICATION_API_PORT', '8004'), os.environ.get('NOTIFICATION_WORKER_PORT', '9104')):\n    try:\n        urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
CMD ["notification-api"]

# The card-processor simulator (development and tests only); its ledger lives under /data.
FROM runtime AS payment-sandbox
LABEL org.opencontainers.image.title="payment-sandbox"
RUN test -x /opt/venv/bin/payment-sandbox
ENV SANDBOX_HOST=0.0.0.0 \
    SANDBOX_DATABASE_PATH=/data/sandbox.db
USER 0
RUN mkdir /data && chown 10001:10001 /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SANDBOX_PORT', '8090') + '/healthz', timeout=2)"]
CMD ["payment-sandbox"]

# The operator CLI (mercato, the default) and the development mail catcher
# (mail-catcher: SMTP 1025, web view 8025, store under /data).
FROM runtime AS ops
LABEL org.opencontainers.image.title="ops"
RUN test -x /opt/venv/bin/mercato && test -x /opt/venv/bin/mail-catcher
ENV MAILCATCHER_HOST=0.0.0.0 \
    MAILCATCHER_STORE=/data/mail.jsonl
USER 0
RUN mkdir /data && chown 10001:10001 /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 1025 8025
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MAILCATCHER_HTTP_PORT', '8025') + '/api/messages', timeout=2)"]
CMD ["mercato"]
