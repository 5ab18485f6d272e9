# Two images from one file, both non-root, pinned base, installed from this checkout with
# the versions in constraints.txt:
#   daemon (default):  `bridge serve` with the daemon extra, and mlflow-k8s-auth for the
#                      kubeflow-mlflow-auth overlay (MLflow's MLFLOW_TRACKING_AUTH=kubernetes)
#       docker build -t ghcr.io/mlflow-kubeflow-bridge/bridge:0.1.0 .
#   components:        what the KFP components run in (bridge[kfp], full MLflow, scikit-learn)
#       docker build --target components -t ghcr.io/mlflow-kubeflow-bridge/bridge-kfp:0.1.0 .
# `make images` builds both with docker or podman.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS source
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY bridge ./bridge

FROM source AS build-components
RUN python -m venv /opt/bridge \
 && /opt/bridge/bin/pip install -c constraints.txt ".[kfp]" mlflow scikit-learn

FROM source AS build-daemon
RUN python -m venv /opt/bridge \
 && /opt/bridge/bin/pip install -c constraints.txt ".[daemon,mlflow-k8s-auth]"

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --no-create-home --shell /usr/sbin/nologin bridge

# KFP runs the component's command in this image (install_kfp_package=False: kfp is here).
FROM runtime AS components
COPY --from=build-components /opt/bridge /opt/bridge
USER 10001:10001
WORKDIR /tmp

FROM runtime AS daemon
COPY --from=build-daemon /opt/bridge /opt/bridge
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["bridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
