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


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str | None
    status: str
    tags: dict[str, str] = field(default_factory=dict)


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
        return _version_info(mv, download_uri)

    def artifact_source(self, download_uri: str) -> ArtifactSource:
        return ArtifactSource(download_uri, self.tracking_uri)

    # -- batched reads (bridge status) ---------------------------------------

    def model_versions(
        self, wanted: list[tuple[str, str]], *, batch: int = 100, workers: int = 4
    ) -> dict[tuple[str, str], ModelVersionInfo]:
        """Many (model, version) pairs at once: ``name IN (...)`` searches, run in parallel.

        ``download_uri`` is left empty (it costs one request per version).
        Pairs the registry does not have are missing from the result.
        """
        names = sorted({n for n, _ in wanted if _quote(n) is not None})
        want = set(wanted)
        chunks = [names[i : i + batch] for i in range(0, len(names), batch)]
        # A name holding both quote characters cannot be written in a filter.
        singles = [(n, v) for n, v in sorted(want) if _quote(n) is None]

        def search(chunk: list[str]) -> list[ModelVersionInfo]:
            found = []
            token = None
            filt = "name IN (" + ", ".join(_quote(n) for n in chunk) + ")"
            with self._errors("searching model versions"):
                while True:
                    page = self.client.search_model_versions(
                        filter_string=filt, max_results=10000, page_token=token
                    )
                    for mv in page:
                        if (mv.name, str(mv.version)) in want:
                            found.append(_version_info(mv, ""))
                    token = page.token
                    if not token:
                        break
            return found

        def get_one(pair: tuple[str, str]) -> list[ModelVersionInfo]:
            try:
                with self._errors(f"model {pair[0]!r} version {pair[1]}"):
                    return [_version_info(self.client.get_model_version(*pair), "")]
            except NotFound:
                return []

        result: dict[tuple[str, str], ModelVersionInfo] = {}
        for infos in _parallel(search, chunks, workers) + _parallel(get_one, singles, workers):
            for info in infos:
                result[(info.name, info.version)] = info
        return result

    def runs(self, run_ids: list[str], *, batch: int = 100, workers: int = 4) -> dict[str, RunInfo]:
        """Many runs at once: ``run_id IN (...)`` searches over every experiment, in parallel."""
        from mlflow.entities import ViewType

        ids = sorted(set(run_ids))
        if not ids:
            return {}
        experiments: list[str] = []
        token = None
        with self._errors("listing experiments"):
            while True:
                page = self.client.search_experiments(
                    view_type=ViewType.ALL, max_results=1000, page_token=token
                )
                experiments.extend(e.experiment_id for e in page)
                token = page.token
                if not token:
                    break
        exp_chunks = [experiments[i : i + 500] for i in range(0, len(experiments), 500)]
        jobs = [(e, ids[i : i + batch]) for e in exp_chunks for i in range(0, len(ids), batch)]

        def search(job) -> list[RunInfo]:
            exp_ids, chunk = job
            filt = "attributes.run_id IN (" + ", ".join(_quote(r) for r in chunk) + ")"
            found = []
            token = None
            with self._errors("searching runs"):
                while True:
                    page = self.client.search_runs(
                        exp_ids,
                        filter_string=filt,
                        run_view_type=ViewType.ALL,
                        max_results=len(chunk),
                        page_token=token,
                    )
                    found.extend(
                        RunInfo(
                            run_id=r.info.run_id,
                            experiment_id=str(r.info.experiment_id),
                            run_name=r.info.run_name,
                            status=str(r.info.status),
                            tags=dict(r.data.tags or {}),
                        )
                        for r in page
                    )
                    token = page.token
                    if not token:
                        break
            return found

        return {r.run_id: r for rs in _parallel(search, jobs, workers) for r in rs}


def _version_info(mv, download_uri: str) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or None,
        source=mv.source,
        status=str(mv.status),
        download_uri=download_uri,
        tags=dict(mv.tags or {}),
    )


def _quote(value: str) -> str | None:
    """A string literal for MLflow's search filter grammar (it has no escapes), or None."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _parallel(fn, items: list, workers: int) -> list:
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _model_info(rm) -> RegisteredModelInfo:
    return RegisteredModelInfo(
        name=rm.name,
        aliases={k: str(v) for k, v in (rm.aliases or {}).items()},
        tags=dict(rm.tags or {}),
    )


class ArtifactSource:
    """The files under one model version's artifact root, read as streams.

    Through the MLflow server's artifact proxy (``mlflow-artifacts:/``) each file
    is streamed straight from the HTTP response; other schemes go through
    MLflow's artifact repository one file at a time via a temporary file, so
    neither path ever holds a whole file or model in memory.
    """

    def __init__(self, uri: str, tracking_uri: str | None):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        self.uri = uri
        self.tracking_uri = tracking_uri
        with mlflow_errors(f"artifacts at {uri}", tracking_uri):
            self._repo = get_artifact_repository(uri)

    def list_files(self) -> list[ArtifactFile]:
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
