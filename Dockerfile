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
# The base image is pinned by tag. For a reproducible build pin its digest too: read the index digest with
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
# and build with --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<that digest>.
#
# The IMEX binaries (nvidia-imex, nvidia-imex-ctl) are not in the image: they belong to the NVIDIA
# driver and reach the daemon's container from the host through the DRA driver's CDI edits.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The project's wheel plus a wheel of each pinned dependency, so that the final stage installs offline
# and receives no source tree.
RUN ["python", "-m", "pip", "wheel", "--wheel-dir", "/wheels", "."]

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="computedomain-operator" \
      org.opencontainers.image.description="ComputeDomain operator: controller, node agent and IMEX daemon" \
      org.opencontainers.image.licenses="Apache-2.0"
# No bytecode writes at run time: the chart mounts the root filesystem read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Bind-mounting the wheels keeps them out of every layer of this stage.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    ["python", "-m", "pip", "install", "--no-index", "--find-links=/wheels", "computedomain-operator"]
# Non-root by default. The node agent and the IMEX daemon run as root only where their pod's
# securityContext asks for it, because they open GPU and IMEX device nodes.
USER 65532:65532
WORKDIR /
CMD ["computedomain-controller", "--help"]
