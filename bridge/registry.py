"""The MLflow edge: registered models, versions, aliases and artifact reads.

Only this module imports mlflow. Errors leave it as bridge errors: an
unreachable server is temporary (exit 3), rejected credentials are permanent
(exit 2), a missing model or version is reported as such.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from bridge.errors import BridgeError, CheckFailed, PermanentError, TemporaryError, UsageError
from bridge.log import redact
from bridge.settings import Settings

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RegisteredModelInfo:
    name: str
    aliases: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    source: str
    status: str
    download_uri: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactFile:
    path: str  # relative to the model root, '/'-separated
    size: int | None


class NotFound(UsageError):
    """A model, version or alias that the registry does not have."""


def configure_mlflow_client(settings: Settings) -> None:
    """Bound MLflow's retries: by default its client retries for minutes."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.mlflow_timeout)))


@contextlib.contextmanager
def mlflow_errors(what: str, tracking_uri: str | None) -> Iterator[None]:
    """Translate MLflow client failures into bridge errors with one clear line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except BridgeError:
        raise
    except MlflowException as exc:
        raise translate_mlflow_error(exc, what, tracking_uri) from None
    except OSError as exc:
        raise TemporaryError(f"{what}: {exc}") from None


def translate_mlflow_error(exc, what: str, tracking_uri: str | None) -> BridgeError:
    code = getattr(exc, "error_code", "") or ""
    text = redact(str(exc).splitlines()[0] if str(exc) else code)
    where = redact(tracking_uri or "the MLflow server")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return NotFound(f"{what}: {text}")
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"):
        return PermanentError(
            f"{what}: MLflow at {where} rejected the credentials ({code})",
            hint="check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD",
        )
    if "failed with exception" in text or "failed with timeout" in text or "Max retries" in text:
        return TemporaryError(
            f"{what}: cannot reach MLflow at {where}",
            hint="is the server up and MLFLOW_TRACKING_URI right? retried "
            f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '?')} times",
        )
    status = exc.get_http_status_code() if hasattr(exc, "get_http_status_code") else 500
    if status >= 500:
        return TemporaryError(f"{what}: MLflow server error: {text}")
    return PermanentError(f"{what}: {text}")


class Registry:
    """Read (and, for promotion, write) the MLflow Model Registry."""

    def __init__(self, settings: Settings):
        settings.require("tracking_uri")
        configure_mlflow_client(settings)
        from mlflow import MlflowClient

        self.settings = settings
        self.tracking_uri = settings.tracking_uri
        self.client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri
        )

    def _errors(self, what: str):
        return mlflow_errors(what, self.tracking_uri)

    def registered_models(self, names: list[str] | None = None) -> list[RegisteredModelInfo]:
        """All registered models (paginated), or exactly ``names`` (each must exist)."""
        if names:
            result = []
            for name in names:
                with self._errors(f"model {name!r}"):
                    rm = self.client.get_registered_model(name)
                result.append(_model_info(rm))
            return result
        models: list[RegisteredModelInfo] = []
        token = None
        with self._errors("listing registered models"):
            while True:
                page = self.client.search_registered_models(max_results=1000, page_token=token)
                models.extend(_model_info(rm) for rm in page)
                token = page.token
                if not token:
                    break
        return models

    def model_version(self, name: str, version: str) -> ModelVersionInfo:
        with self._errors(f"model {name!r} version {version}"):
            mv = self.client.get_model_version(name, version)
            download_uri = self.client.get_model_version_download_uri(name, version)
        return ModelVersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or None,
            source=mv.source,
            status=str(mv.status),
            download_uri=download_uri,
            tags=dict(mv.tags or {}),
        )

    def artifact_source(self, download_uri: str) -> ArtifactSource:
        return ArtifactSource(download_uri, self.tracking_uri, self.settings)


def _model_info(rm) -> RegisteredModelInfo:
    return RegisteredModelInfo(
        name=rm.name,
        aliases={k: str(v) for k, v in (rm.aliases or {}).items()},
        tags=dict(rm.tags or {}),
    )


class ArtifactSource:
    """The files under one model version's artifact root, read as streams.

    When the artifacts live in S3 and bridge may read it directly (an ``s3://``
    artifact root, or ``mlflow-artifacts:/`` with BRIDGE_SOURCE_ARTIFACTS_URI
    naming the server's --artifacts-destination), ``direct`` is the S3 location
    and the transfer engine copies server-side or with ranged reads. Otherwise
    files stream through the MLflow server's artifact proxy straight from the
    HTTP response, or for other schemes via MLflow's artifact repository one
    file at a time through a temporary file; no path holds a whole file or
    model in memory.
    """

    def __init__(self, uri: str, tracking_uri: str | None, settings: Settings | None = None):
        self.uri = uri
        self.tracking_uri = tracking_uri
        self._repo_obj = None
        self._objects: dict | None = None
        self.direct = direct_location(uri, settings) if settings is not None else None
        if self.direct is None:
            _ = self._repo

    @property
    def _repo(self):
        if self._repo_obj is None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            with mlflow_errors(f"artifacts at {self.uri}", self.tracking_uri):
                self._repo_obj = get_artifact_repository(self.uri)
        return self._repo_obj

    def describe(self) -> str:
        return self.direct.uri() if self.direct is not None else f"{self.uri} (through MLflow)"

    def object(self, path: str):
        """The S3 object behind ``path`` (direct sources only), pinned to its listed ETag."""
        if self._objects is None:
            self.list_files()
        return self._objects[path]

    def list_files(self) -> list[ArtifactFile]:
        if self.direct is not None:
            self._objects = self.direct.list_objects()
            return sorted(
                (ArtifactFile(path=p, size=o.size) for p, o in self._objects.items()),
                key=lambda f: f.path,
            )
        files: list[ArtifactFile] = []
        pending = [None]
        with mlflow_errors(f"listing artifacts at {self.uri}", self.tracking_uri):
            while pending:
                path = pending.pop()
                for info in self._repo.list_artifacts(path):
                    if info.is_dir:
                        pending.append(info.path)
                    else:
                        files.append(ArtifactFile(path=info.path, size=info.file_size))
        return sorted(files, key=lambda f: f.path)

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[BinaryIO]:
        if self.direct is not None:
            try:
                obj = self.object(path)
            except KeyError:
                raise CheckFailed(f"{path} is not under {self.direct.uri()}") from None
            with self.direct.errors(f"reading {self.direct.uri(obj.key)}"):
                with self.direct.open(obj) as stream:
                    yield stream
            return
        from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

        with mlflow_errors(f"reading artifact {path!r} at {self.uri}", self.tracking_uri):
            if isinstance(self._repo, HttpArtifactRepository):
                with _http_stream(self._repo, path) as stream:
                    yield stream
                return
            tmp = tempfile.mkdtemp(prefix="bridge-artifact-")
            try:
                local = self._repo.download_artifacts(path, dst_path=tmp)
                with open(local, "rb") as fh:
                    yield fh
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def read_bytes(self, path: str, limit: int = 10 * 1024 * 1024) -> bytes:
        """Read a small file (such as MLmodel) whole, refusing anything over ``limit``."""
        with self.open(path) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise CheckFailed(f"{path} at {self.uri} is larger than {limit} bytes")
        return data


def source_s3_uri(uri: str, settings: Settings) -> str | None:
    """The s3:// URI a version's artifacts can be read from directly, if any.

    ``s3://`` roots are used as they are; ``mlflow-artifacts:/<path>`` (with or
    without ``//host:port``) maps onto BRIDGE_SOURCE_ARTIFACTS_URI, the MLflow
    server's --artifacts-destination. Anything else streams through MLflow.
    """
    if uri.startswith("s3://"):
        return uri
    if uri.startswith("mlflow-artifacts:") and settings.source_artifacts_uri:
        rest = uri[len("mlflow-artifacts:") :]
        if rest.startswith("//"):
            rest = "/" + rest[2:].partition("/")[2]
        return settings.source_artifacts_uri.rstrip("/") + "/" + rest.lstrip("/")
    return None


def direct_location(uri: str, settings: Settings):
    s3_uri = source_s3_uri(uri, settings)
    if s3_uri is None:
        return None
    from bridge.store import SourceBucket

    bucket, _, prefix = s3_uri[len("s3://") :].partition("/")
    return SourceBucket(
        bucket,
        prefix,
        settings.source_endpoint_url,
        settings.source_region,
        settings.s3_max_attempts,
        pool=4 * settings.transfer_concurrency,
    )


@contextlib.contextmanager
def _http_stream(repo, path: str) -> Iterator[BinaryIO]:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import augmented_raise_for_status, http_request

    endpoint = posixpath.join("/", path)
    resp = http_request(get_default_host_creds(repo.artifact_uri), endpoint, "GET", stream=True)
    try:
        augmented_raise_for_status(resp)
        resp.raw.decode_content = True
        yield resp.raw
    finally:
        resp.close()
