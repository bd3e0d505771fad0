# syntax=docker/dockerfile:1
#
# One image for every entry point: computedomain-controller, computedomain-agent,
# computedomain-kubelet-plugin and compute-domain-daemon. The Helm chart and the controller set the command of each container, so the
# image has no ENTRYPOINT.
#
#   docker build -t computedomain-operator:0.1.0 .
#   # GB200 nodes are arm64, control planes often amd64:
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/computedomain-operator:0.1.0 --push .
#
# Python is Debian bookworm's own python3, not a python.org build: `make image` (image/build.py)
# assembles this same image without a container engine, from Debian packages, and the two must agree
# (tests/unit/test_image_recipe.py and tests/integration/test_image.py compare them). Both install the
# project with image/install.sh from the pinned, hashed lock image/requirements.txt
# (regenerate it with `.venv/bin/python image/lock.py`).
#
# The base image is pinned by tag. For a reproducible build pin its digest too: read the index digest with
#   docker buildx imagetools inspect debian:bookworm-slim
# and build with --build-arg BASE_IMAGE=debian:bookworm-slim@sha256:<that digest>.
#
# The IMEX binaries (nvidia-imex, nvidia-imex-ctl) are not in the image: they belong to the NVIDIA
# driver and reach the daemon's container from the host through the DRA driver's CDI edits.

ARG BASE_IMAGE=debian:bookworm-slim

# The wheels the final stage installs: every pin of the lock, checked against its hashes, and the
# project's own wheel. The final stage then installs offline and receives no source tree.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN ["python3", "-m", "venv", "/build"]
WORKDIR /src
COPY image/requirements.txt image/
RUN ["/build/bin/pip", "download", "--only-binary=:all:", "--no-deps", "--require-hashes", \
     "--requirement", "image/requirements.txt", "--dest", "/wheels"]
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN ["/build/bin/pip", "wheel", "--no-deps", "--wheel-dir", "/wheels", "."]

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="computedomain-operator" \
      org.opencontainers.image.description="ComputeDomain operator: controller, node agent and IMEX daemon" \
      org.opencontainers.image.licenses="Apache-2.0"
# python3 for the programs and for the IMEX test double (`#!/usr/bin/env python3`) that the daemon's
# container may run; ca-certificates because a kubeconfig server without its own CA is trusted through
# the system store; python3-venv for the virtualenv and the pip wheel that install.sh runs once.
# The shell the chart's init container runs (`sh -c`) comes with the base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Bind-mounting the wheels and the install script keeps them out of every layer of this stage.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=image,target=/image \
    ["sh", "/image/install.sh", "/wheels", "/image/requirements.txt"]
# The virtualenv's bin first: the chart and the controller call the entry points by name.
# No bytecode writes at run time: the chart mounts the root filesystem read-only (install.sh compiled it).
ENV PATH=/opt/computedomain/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default. The node agent and the IMEX daemon run as root only where their pod's
# securityContext asks for it, because they open GPU and IMEX device nodes.
USER 65532:65532
WORKDIR /
CMD ["computedomain-controller", "--help"]
