# syntax=docker/dockerfile:1
# The model server image: `kit serve` over the ONNX model from the optimize stage (models/serving), nothing else.
# Runtime dependencies only (requirements-serve.txt: ONNX Runtime, tokenizers, FastAPI, ...; no torch/transformers).
# Build from the project root after `dvc repro optimize`:  docker build -t kit-serve:0.1.0 .
# The base is a literal (not an ARG) so scanners can check its tag; for byte-reproducible builds pin it by digest,
# python:3.11-slim-bookworm@sha256:..., in both FROM lines.

# ---- build: a virtualenv with the pinned runtime set and the kit package (no build tools reach the final image)
FROM python:3.11-slim-bookworm AS build
# Builds without an index (tests/fixtures_container.py): --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=DIR,
# DIR a wheel dir mounted into the build. Unset, pip uses PyPI as usual.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements-serve.txt ./
RUN pip install --no-cache-dir -r requirements-serve.txt && pip check
COPY pyproject.toml README.md ./
COPY kit ./kit
# Dependencies are already pinned above; the package itself must not pull the training stack (torch) back in.
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- runtime: slim base, non-root, read-only friendly (writes only to /tmp)
FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="kit-serve" \
      org.opencontainers.image.description="Transformer text classifier served with ONNX Runtime behind FastAPI" \
      org.opencontainers.image.source="https://github.com/example/kit"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp
# UID/GID 10001: above the host range, matching runAsUser in the Kubernetes manifests (kit/deploy/pod.py RUN_AS_UID).
RUN groupadd --system --gid 10001 kit \
    && useradd --system --no-log-init --uid 10001 --gid kit --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kit
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only for the server user: the model and params cannot be changed at run time.
COPY params.yaml ./params.yaml
# The model is baked in; to mount one instead, mount a volume at /models/serving (same layout) over this.
COPY models/serving /models/serving
USER 10001:10001
# 8000: the API (POST /predict, behind API keys when --api-key-file is given).
EXPOSE 8000
# 9000: the admin port (serve.admin_port in the baked params.yaml): /metrics, /healthz, /readyz, never behind a key,
# so the network policy can open it to monitoring and the kubelet only. The API port serves no /metrics.
EXPOSE 9000
# The liveness check the Kubernetes probes make (kit/deploy/pod.py probes the admin port): on its own port it still
# answers when the API port is saturated (limit_concurrency, backlog), so load alone never marks the server unhealthy.
# A container run with --admin-port 0 (one port) needs this check overridden to probe 8000. slim has no curl: Python
# makes the request.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:9000/healthz', timeout=2).status != 200)"]
CMD ["python", "-m", "kit.serve", "/models/serving", "--host", "0.0.0.0", "--port", "8000"]
