# The sync daemon image: `bridge serve` with the daemon extra, as a non-root user.
# Build: docker build -t mlflow-kubeflow-bridge:0.1.0 .
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY bridge ./bridge
RUN python -m venv /opt/bridge \
 && /opt/bridge/bin/pip install -c constraints.txt ".[daemon]"

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
COPY --from=build /opt/bridge /opt/bridge
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --no-create-home --shell /usr/sbin/nologin bridge
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["bridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
