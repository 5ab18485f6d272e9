"""The MLflow edge: registered models, versions, aliases and artifact reads.

Against an ``http(s)://`` MLflow server the requests are bridge's own, made by MLflow's
rules (bridge.mlflow_http, bridge.mlflow_rest, bridge.mlflow_artifacts), so a sync, a
status or the daemon never imports MLflow; any other registry, or a setting only
MLflow's client honours, goes through ``MlflowClient`` (see ``lean_refusal``).
BRIDGE_MLFLOW_CLIENT=mlflow always uses MLflow's client. Errors leave this module as
bridge errors: an unreachable server is temporary (exit 3), rejected credentials are
permanent (exit 2), a missing model or version is reported as such.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import logging
import os
import posixpath
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from bridge.errors import BridgeError, CheckFailed, PermanentError, TemporaryError, UsageError
from bridge.log import redact
from bridge.mlflow_http import RestError, lean_refusal
from bridge.settings import Settings

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    run_id: str | None
    source: str
    status: str
    download_uri: str
    tags: dict[str, str] = field(default_factory=dict)
    model_id: str | None = None  # MLflow 3: the logged model the version was made from


@dataclass(frozen=True)
class RegisteredModelInfo:
    name: str
    aliases: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)  # MLflow 2 stage -> latest version
    # The versions the registry sent along with the model (the latest of each stage,
    # "None" included), by version; download_uri left empty. See listed_versions.
    versions: dict[str, ModelVersionInfo] = field(default_factory=dict, compare=False, repr=False)


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


class _FilterRefused(PermanentError):
    """The server would not run a batched search (its filter, or an older server)."""


@dataclass
class VersionReads:
    """A batched read: the versions found, and the pairs that could not be read (and why)."""

    found: dict[tuple[str, str], ModelVersionInfo] = field(default_factory=dict)
    failed: dict[tuple[str, str], BridgeError] = field(default_factory=dict)

    def add(self, other: VersionReads) -> None:
        self.found.update(other.found)
        self.failed.update(other.failed)


def configure_mlflow_client(settings: Settings) -> None:
    """Bound MLflow's retries: by default its client retries for minutes."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.mlflow_timeout)))
    # MLflow keeps one pooled session (keep-alive) per process; its pool must hold a
    # connection per file read at once through the artifact proxy, or the extra
    # connections are opened and dropped per file.
    os.environ.setdefault(
        "MLFLOW_HTTP_POOL_MAXSIZE", str(max(10, 4 * settings.transfer_concurrency))
    )


def _client_errors() -> tuple[type[Exception], ...]:
    """The exceptions an MLflow call can fail with: bridge's REST error, and MLflow's
    own once MLflow is loaded (a process that never imported it cannot meet them)."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    if mlflow_exceptions is None:
        return (RestError,)
    return (RestError, mlflow_exceptions.MlflowException)


@contextlib.contextmanager
def mlflow_errors(what: str, tracking_uri: str | None) -> Iterator[None]:
    """Translate MLflow client failures into bridge errors with one clear line."""
    try:
        yield
    except BridgeError:
        raise
    except _client_errors() as exc:
        raise translate_mlflow_error(exc, what, tracking_uri) from None
    except OSError as exc:
        raise TemporaryError(f"{what}: {exc}") from None


def translate_mlflow_error(exc, what: str, tracking_uri: str | None) -> BridgeError:
    code = getattr(exc, "error_code", "") or ""
    text = redact(str(exc).splitlines()[0] if str(exc) else code)
    where = redact(tracking_uri or "the MLflow server")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return NotFound(f"{what}: {text}")
    if code in ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"):
        return PermanentError(
            f"{what}: MLflow at {where} rejected the credentials ({code})",
            hint="check MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD, or "
            "MLFLOW_TRACKING_AUTH (kubernetes, bearer-token-file)",
        )
    if code == "PERMISSION_DENIED":
        return PermanentError(
            f"{what}: MLflow at {where} refused it to this identity ({code})",
            hint="grant the identity bridge runs as the right to do this in MLflow",
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


# Installed with full MLflow, never used by a sync, a status or a daemon: `import mlflow`
# loads them through optional imports (mlflow.data registers pandas and NumPy dataset
# constructors when they import), which costs seconds and ~100 MB per process.
# mlflow-skinny (the slim image) installs none of them.
_UNUSED_HEAVY = ("pandas", "scipy", "pyarrow", "numpy")


class _Unimportable(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def lean_mlflow_imports(settings: Settings) -> None:
    """Import MLflow's client as the slim image has it, without pandas, SciPy, pyarrow, NumPy.

    For the processes that only sync, report status or serve (`bridge sync`,
    `render`, `status`, `serve`): MLflow imports these optionally and the daemon
    image does not install them, so the sync path is known to work without them.
    While MLflow is imported they count as not installed; afterwards they import
    normally. A no-op when MLflow or any of them is already imported (another
    caller in this process may rely on MLflow having seen them).
    """
    if uses_own_requests(settings):
        return  # MLflow is not imported at all
    if "mlflow" in sys.modules or any(m in sys.modules for m in _UNUSED_HEAVY):
        return
    hide = _Unimportable(_UNUSED_HEAVY)
    sys.meta_path.insert(0, hide)
    try:
        import mlflow.store.artifact.artifact_repository_registry  # noqa: F401
        import mlflow.tracking  # noqa: F401
    finally:
        sys.meta_path.remove(hide)


class Registry:
    """Read (and, for promotion, write) the MLflow Model Registry."""

    def __init__(self, settings: Settings):
        settings.require("tracking_uri")
        configure_mlflow_client(settings)
        self.settings = settings
        self.tracking_uri = settings.tracking_uri
        self.lean = uses_own_requests(settings)
        if self.lean:
            from bridge.mlflow_rest import RestClient

            self.client = RestClient(settings.tracking_uri, settings.registry_uri)
            return
        from mlflow import MlflowClient

        self.client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri
        )

    def _errors(self, what: str):
        return mlflow_errors(what, self.tracking_uri)

    def registered_models(self, names: list[str] | None = None) -> list[RegisteredModelInfo]:
        """All registered models (paginated), or exactly ``names`` (each must exist)."""
        return [m for page in self.registered_model_pages(names) for m in page]

    def registered_model_pages(
        self, names: list[str] | None = None
    ) -> Iterator[list[RegisteredModelInfo]]:
        """:meth:`registered_models` as it arrives: one list per page of the listing (or
        per named model), so that a caller can work on a page while the next is read.

        The pages are read one after the other with the server's own page tokens
        (MLflow documents them as opaque), never by guessing offsets."""
        if names:
            for name in names:
                with self._errors(f"model {name!r}"):
                    rm = self.client.get_registered_model(name)
                yield [_model_info(rm)]
            return
        token = None
        while True:
            with self._errors("listing registered models"):
                models, token = self._listing_page(token)
            yield models
            if not token:
                break

    def _listing_page(self, token: str | None) -> tuple[list[RegisteredModelInfo], str | None]:
        """One page of the registered-model listing and the token of the next.

        From an MLflow server, the page's JSON is read as it is: MLflow's client would
        turn 1,000 models (each with its latest versions) into protobuf messages and
        then entities first, which costs more than the request itself. The request is
        MLflow's own (``http_request``: its credentials, auth providers, retries and
        pooled session) on the endpoint its REST store uses."""
        if self.lean:
            body = self.client.search_registered_models_json(1000, token)
            models = [_model_info_json(rm) for rm in body.get("registered_models") or []]
            return models, body.get("next_page_token") or None
        store = self._rest_store
        if store is None:
            page = self.client.search_registered_models(max_results=1000, page_token=token)
            return [_model_info(rm) for rm in page], page.token or None
        from mlflow.protos.model_registry_pb2 import SearchRegisteredModels

        body = _rest_call(store, SearchRegisteredModels, {"max_results": 1000, "page_token": token})
        models = [_model_info_json(rm) for rm in body.get("registered_models") or []]
        return models, body.get("next_page_token") or None

    @functools.cached_property
    def _rest_store(self):
        """MLflow's REST registry store when the registry is an MLflow server, else None
        (Databricks and Unity Catalog stores subclass it with rules of their own, and an
        MLflow without the parts used here gets its client's way)."""
        from mlflow.store.model_registry.rest_store import RestStore

        if self.lean:
            return None
        registry_client = getattr(self.client, "_get_registry_client", None)
        if registry_client is None:
            return None
        with self._errors("the model registry"):
            store = registry_client().store
        parts = ("get_host_creds", "_get_endpoint_from_method")
        if type(store) is RestStore and all(hasattr(store, p) for p in parts):
            return store
        return None

    def model_version(self, name: str, version: str) -> ModelVersionInfo:
        with self._errors(f"model {name!r} version {version}"):
            mv = self.client.get_model_version(name, version)
            download_uri = self.client.get_model_version_download_uri(name, version)
        return _version_info(mv, download_uri)

    def artifact_source(self, info: ModelVersionInfo) -> ArtifactSource:
        """The version's artifacts, once its download location is one bridge may read.

        Raises CheckFailed naming the source and the setting to change otherwise."""
        self.check_source(info)
        return ArtifactSource(info.download_uri, self.tracking_uri, self.settings)

    def check_source(self, info: ModelVersionInfo) -> None:
        """Refuse a version whose artifacts lie outside MLflow's artifact roots (see
        bridge.sources): the tracking server's own store, the experiment of the run
        that produced it, BRIDGE_SOURCE_ARTIFACTS_URI or BRIDGE_ALLOWED_SOURCE_PREFIXES."""
        from bridge.sources import UnsafeLocation, first_root_over, served_by_tracking_server

        uri = info.download_uri
        what = f"model {info.name!r} version {info.version}: source {redact(uri)}"
        fix = "if models are meant to come from there, add it to BRIDGE_ALLOWED_SOURCE_PREFIXES"
        try:
            if uri.startswith("runs:"):
                uri = self._run_location(uri, what)
            if served_by_tracking_server(uri, self.tracking_uri):
                return
            roots = list(self.settings.allowed_source_prefixes)
            if self.settings.source_artifacts_uri:
                roots.append(self.settings.source_artifacts_uri)
            if first_root_over(uri, roots):
                return
            experiment_root = self._experiment_root(info)
            if experiment_root and first_root_over(uri, [experiment_root]):
                return
        except UnsafeLocation as exc:
            raise CheckFailed(f"{what} is refused: {exc}", hint=fix) from None
        where = (
            f" (its experiment keeps artifacts at {redact(experiment_root)})"
            if experiment_root
            else ""
        )
        raise CheckFailed(f"{what} is outside MLflow's artifact roots{where}; not copied", hint=fix)

    def source_refusal(self, info: ModelVersionInfo) -> str | None:
        """Why sync would refuse to copy this version (one line), or None.

        Other failures (an outage, a version deleted meanwhile) are sync's to report."""
        try:
            if not info.download_uri:
                info = self.model_version(info.name, info.version)
            self.check_source(info)
        except CheckFailed as exc:
            return exc.one_line()
        except (NotFound, TemporaryError):
            return None
        return None

    def _run_location(self, uri: str, what: str) -> str:
        """Where a ``runs:/<run id>/<path>`` URI points: under that run's artifact URI."""
        from bridge.sources import UnsafeLocation

        run_id, _, path = uri[len("runs:") :].lstrip("/").partition("/")
        if not run_id:
            raise UnsafeLocation("it names no run")
        with self._errors(what):
            artifact_uri = self.client.get_run(run_id).info.artifact_uri
        return artifact_uri.rstrip("/") + ("/" + path if path else "")

    def _experiment_root(self, info: ModelVersionInfo) -> str | None:
        """The artifact location of the experiment the version comes from: that of its
        run, else (MLflow 3) that of its logged model; None when it names neither."""
        try:
            with self._errors(f"the experiment of model {info.name!r} version {info.version}"):
                if info.run_id:
                    experiment_id = self.client.get_run(info.run_id).info.experiment_id
                elif info.model_id and hasattr(self.client, "get_logged_model"):
                    experiment_id = self.client.get_logged_model(info.model_id).experiment_id
                else:
                    return None
                return self.client.get_experiment(experiment_id).artifact_location
        except NotFound:
            return None

    # -- batched reads (bridge status, sync prefetch) ---------------------------

    def model_versions(
        self, wanted: list[tuple[str, str]], *, batch: int = 100, workers: int = 4
    ) -> VersionReads:
        """Many (model, version) pairs at once: ``name IN (...)`` searches, run in parallel.

        ``download_uri`` is left empty (it costs one request per version). Pairs the
        registry does not have are in neither ``found`` nor ``failed``. When the server
        refuses a batch's filter, that batch is read one version at a time, and a
        version that cannot be read is a ``failed`` entry: one model never stops the rest.
        """
        want = set(wanted)
        names = sorted({n for n, _ in want})
        chunks = [names[i : i + batch] for i in range(0, len(names), batch)]

        def search(chunk: list[str]) -> VersionReads:
            try:
                return VersionReads(found=self._search_versions(chunk, want))
            except _FilterRefused as exc:
                log.warning(
                    "the registry refused a batched search (%s); reading %d model(s) one by one",
                    exc.one_line(),
                    len(chunk),
                )
                in_chunk = set(chunk)
                return self._get_versions(sorted(p for p in want if p[0] in in_chunk), workers)

        reads = VersionReads()
        for part in _parallel(search, chunks, workers):
            reads.add(part)
        return reads

    def _search_versions(
        self, chunk: list[str], want: set[tuple[str, str]]
    ) -> dict[tuple[str, str], ModelVersionInfo]:
        found = {}
        token = None
        filt = "name IN (" + ", ".join(_filter_literal(n) for n in chunk) + ")"
        with self._errors("searching model versions"):
            while True:
                with _refusable():
                    page = self.client.search_model_versions(
                        filter_string=filt, max_results=10000, page_token=token
                    )
                for mv in page:
                    if (mv.name, str(mv.version)) in want:
                        found[(mv.name, str(mv.version))] = _version_info(mv, "")
                token = page.token
                if not token:
                    break
        return found

    def _get_versions(self, pairs: list[tuple[str, str]], workers: int) -> VersionReads:
        def get_one(pair: tuple[str, str]) -> VersionReads:
            try:
                with self._errors(f"model {pair[0]!r} version {pair[1]}"):
                    mv = self.client.get_model_version(*pair)
            except NotFound:
                return VersionReads()
            except (PermanentError, CheckFailed) as exc:  # outages still stop the pass
                return VersionReads(failed={pair: exc})
            return VersionReads(found={pair: _version_info(mv, "")})

        reads = VersionReads()
        for part in _parallel(get_one, pairs, workers):
            reads.add(part)
        return reads

    def runs(self, run_ids: list[str], *, batch: int = 100, workers: int = 4) -> dict[str, RunInfo]:
        """Many runs at once: ``run_id IN (...)`` searches over every experiment, in parallel."""
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        if self.lean:
            view_all = self.client.VIEW_ALL
        else:
            from mlflow.entities import ViewType

            view_all = ViewType.ALL
        experiments: list[str] = []
        token = None
        with self._errors("listing experiments"):
            while True:
                page = self.client.search_experiments(
                    view_type=view_all, max_results=1000, page_token=token
                )
                experiments.extend(e.experiment_id for e in page)
                token = page.token
                if not token:
                    break
        exp_chunks = [experiments[i : i + 500] for i in range(0, len(experiments), 500)]
        jobs = [(e, ids[i : i + batch]) for e in exp_chunks for i in range(0, len(ids), batch)]

        def search(job) -> list[RunInfo]:
            exp_ids, chunk = job
            filt = "attributes.run_id IN (" + ", ".join(_filter_literal(r) for r in chunk) + ")"
            found = []
            token = None
            try:
                with self._errors("searching runs"):
                    while True:
                        with _refusable():
                            page = self.client.search_runs(
                                exp_ids,
                                filter_string=filt,
                                run_view_type=view_all,
                                max_results=len(chunk),
                                page_token=token,
                            )
                        found.extend(_run_info(r) for r in page)
                        token = page.token
                        if not token:
                            break
            except _FilterRefused as exc:
                # Lineage is extra information: runs that cannot be searched are left out.
                log.warning("the registry refused a run search (%s)", exc.one_line())
                return []
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
        model_id=getattr(mv, "model_id", None) or None,
    )


def _run_info(r) -> RunInfo:
    return RunInfo(
        run_id=r.info.run_id,
        experiment_id=str(r.info.experiment_id),
        run_name=r.info.run_name,
        status=str(r.info.status),
        tags=dict(r.data.tags or {}),
    )


def _filter_literal(value: str) -> str:
    """A string literal that MLflow's search filter reads back as exactly ``value``.

    MLflow tokenizes a filter with sqlparse (a string is ``'(''|\\'|[^'])*'``) and
    reads an ``IN (...)`` list with ``ast.literal_eval`` (mlflow/utils/search_utils.py,
    ``_parse_list_from_sql_token``). A single-quoted literal holding no quote or
    backslash of its own, every other character outside printable ASCII written as
    a Python escape, survives both: newlines, quotes, backslashes and any unicode.
    ``IN`` compares exactly (SQL ``IN`` with bound values), so ``%`` and ``_`` are
    not wildcards there.
    """
    out = []
    for ch in value:
        code = ord(ch)
        if 0x20 <= code < 0x7F and ch not in "'\"\\":
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "'" + "".join(out) + "'"


@contextlib.contextmanager
def _refusable() -> Iterator[None]:
    """Around a search: a filter the server will not run raises _FilterRefused."""
    try:
        yield
    except _client_errors() as exc:
        status = exc.get_http_status_code() if hasattr(exc, "get_http_status_code") else 0
        if getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE" or status in (413, 414):
            text = str(exc).splitlines()[0] if str(exc) else exc.error_code
            raise _FilterRefused(redact(text)) from None
        raise


def _parallel(fn, items: list, workers: int) -> list:
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _model_info(rm) -> RegisteredModelInfo:
    # The registry returns the latest version of each stage with the model itself:
    # whole ModelVersion entities, built by the same SqlModelVersion.to_mlflow_entity
    # that get_model_version and search_model_versions answer with.
    latest = getattr(rm, "latest_versions", None) or []
    return RegisteredModelInfo(
        name=rm.name,
        aliases={k: str(v) for k, v in (rm.aliases or {}).items()},
        tags=dict(rm.tags or {}),
        stages={
            str(mv.current_stage): str(mv.version)
            for mv in latest
            if str(mv.current_stage) in ("Staging", "Production")
        },
        versions={str(mv.version): _version_info(mv, "") for mv in latest if mv.name == rm.name},
    )


def _rest_call(store, api, params: dict) -> dict:
    """The JSON answer of one registry REST call, made as MLflow's ``call_endpoint`` makes
    it (mlflow/utils/rest_utils.py), without turning the answer into protobuf."""
    import json

    from mlflow.utils.rest_utils import http_request, verify_rest_response

    check_workspace = getattr(store, "_validate_workspace_support_if_specified", None)
    if check_workspace is not None:
        check_workspace()
    endpoint, method = store._get_endpoint_from_method(api)
    body = {k: v for k, v in params.items() if v is not None}
    sent = {"params": body} if method == "GET" else {"json": body}
    response = http_request(store.get_host_creds(), endpoint, method, **sent)
    response = verify_rest_response(response, endpoint)
    try:
        answer = json.loads(response.text)
    except ValueError:
        raise TemporaryError(f"{endpoint}: the MLflow server answered with invalid JSON") from None
    if not isinstance(answer, dict):
        raise TemporaryError(f"{endpoint}: the MLflow server answered with unexpected JSON")
    return answer


def _pairs(items, key: str, value: str) -> dict[str, str]:
    return {str(i[key]): str(i.get(value, "")) for i in items or [] if key in i}


def _model_info_json(rm: dict) -> RegisteredModelInfo:
    """:func:`_model_info` of a registered model as MLflow's REST API spells it (the JSON
    of the RegisteredModel message, mlflow/protos/model_registry.proto)."""
    name = rm["name"]
    latest = [
        mv
        for mv in rm.get("latest_versions") or []
        if mv.get("name") == name and "version" in mv and "source" in mv and "status" in mv
    ]
    return RegisteredModelInfo(
        name=name,
        aliases=_pairs(rm.get("aliases"), "alias", "version"),
        tags=_pairs(rm.get("tags"), "key", "value"),
        stages={
            str(mv["current_stage"]): str(mv["version"])
            for mv in rm.get("latest_versions") or []
            if mv.get("current_stage") in ("Staging", "Production") and "version" in mv
        },
        versions={
            str(mv["version"]): ModelVersionInfo(
                name=name,
                version=str(mv["version"]),
                run_id=mv.get("run_id") or None,
                source=str(mv["source"]),
                status=str(mv["status"]),
                download_uri="",
                tags=_pairs(mv.get("tags"), "key", "value"),
                model_id=mv.get("model_id") or None,
            )
            for mv in latest
        },
    )


def listed_versions(
    models: list[RegisteredModelInfo], wanted: list[tuple[str, str]] | set[tuple[str, str]]
) -> dict[tuple[str, str], ModelVersionInfo]:
    """The ``wanted`` (model, version) pairs that the model listing already carried.

    A version the alias points to is often the model's latest one, which MLflow sends
    with every registered model (``latest_versions``); those need no version read."""
    by_name = {m.name: m for m in models}
    found = {}
    for name, version in wanted:
        m = by_name.get(name)
        info = m.versions.get(version) if m is not None else None
        if info is not None:
            found[(name, version)] = info
    return found


def uses_own_requests(settings: Settings) -> bool:
    """True when bridge makes the MLflow requests itself (no ``import mlflow``)."""
    if settings.mlflow_client != "auto":
        return False
    return lean_refusal(settings.tracking_uri, settings.registry_uri) is None


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
        self._sizes: dict[str, int | None] = {}
        self._signed: dict[str, object] = {}
        self._signed_lock = threading.Lock()
        self._first_etag: dict[str, str] = {}  # of the last read of each file from byte 0
        self.direct = direct_location(uri, settings) if settings is not None else None
        self._lean = settings is not None and uses_own_requests(settings)
        if self.direct is None:
            _ = self._repo

    @property
    def _repo(self):
        if self._repo_obj is None:
            from bridge.mlflow_artifacts import ProxyRepo, resolve_uri

            proxied = resolve_uri(self.uri, self.tracking_uri or "") if self._lean else None
            if proxied is not None:
                self._repo_obj = ProxyRepo(proxied)
                return self._repo_obj
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            with mlflow_errors(f"artifacts at {self.uri}", self.tracking_uri):
                self._repo_obj = get_artifact_repository(self.uri)
        return self._repo_obj

    def _streams_over_http(self) -> bool:
        """The repository reads files as HTTP GETs through MLflow's artifact proxy."""
        from bridge.mlflow_artifacts import ProxyRepo

        if isinstance(self._repo, ProxyRepo):
            return True
        from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

        return isinstance(self._repo, HttpArtifactRepository)

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
        self._sizes = {f.path: f.size for f in files}
        return sorted(files, key=lambda f: f.path)

    def listed_size(self, path: str) -> int | None:
        """The size the last listing reported for ``path`` (None: not listed or unknown)."""
        if self.direct is not None:
            obj = (self._objects or {}).get(path)
            return obj.size if obj is not None else None
        return self._sizes.get(path)

    @property
    def resumable(self) -> bool:
        """True when files stream over HTTP from MLflow's artifact proxy, which serves
        byte ranges: :meth:`open_at` can resume a read where it stopped."""
        return self.direct is None and self._streams_over_http()

    def open_at(self, path: str, offset: int):
        """A readable body of ``path`` from byte ``offset`` on, through the artifact proxy.

        The caller closes it. MLflow's own request helpers do the requests, so
        authentication (token or basic) and its pooled keep-alive sessions are MLflow's.
        Where the server hands out presigned download URLs (MLflow's own downloads then
        use them too), the bytes come straight from the store the server proxies, with
        a URL the server signed for this one file; otherwise through the proxy itself.
        """
        with mlflow_errors(f"reading artifact {path!r} at {self.uri}", self.tracking_uri):
            if self._presigned:
                # A resumed read is pinned (If-Match) to the object the read began on, so
                # a file replaced in between fails instead of being stored as a mix.
                body = _presigned_body(
                    self._repo, path, offset, self._first_etag.get(path) if offset else None
                )
                if not offset:
                    self._first_etag[path] = body.etag
                return body
            return _http_body(self._repo, path, offset)

    @property
    def ranged(self) -> bool:
        """Parts of one file can be read in parallel, each with its own byte-range GET.

        Only through URLs the server presigned: then each range is one GET on the store
        the server proxies. Through the proxy itself, every request makes the server
        fetch the whole file from its store first (``_download_artifact`` in
        mlflow/server/handlers.py downloads it to a temporary directory), so ranges in
        parallel would multiply the server's reads; there a file is one resumable stream.
        """
        return self.resumable and self._presigned

    def read_range(self, path: str, start: int, end: int, fresh_url: bool = False):
        """A readable body of bytes [start, end) of ``path``, through a presigned URL.

        The body carries ``etag`` (of the object the store served) and ``total`` (its
        size, from ``Content-Range``) so that a caller reading a file in ranges can
        tell it changed between them. ``fresh_url``: ask the server for a new URL (a
        retry after a failure: the last one may have expired).
        """
        with mlflow_errors(f"reading artifact {path!r} at {self.uri}", self.tracking_uri):
            presigned = self._signed_url(path, fresh_url)
            return _range_body(presigned, path, start, end)

    def _signed_url(self, path: str, fresh: bool):
        # One URL per file for all its ranges (MLflow's own parallel download does the same).
        with self._signed_lock:
            presigned = None if fresh else self._signed.get(path)
        if presigned is None:
            presigned = self._repo._get_presigned_download_url(path)
            with self._signed_lock:
                self._signed[path] = presigned
        return presigned

    @functools.cached_property
    def _presigned(self) -> bool:
        """MLflow's own choice for its downloads: MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD,
        else what the server advertises (mlflow/store/artifact/mlflow_artifacts_repo.py)."""
        enabled = getattr(self._repo, "_is_multipart_download_enabled", None)
        return bool(enabled and enabled())

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
        with mlflow_errors(f"reading artifact {path!r} at {self.uri}", self.tracking_uri):
            if self._streams_over_http():
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
        """Read a small file (such as MLmodel) whole, refusing anything over ``limit``.

        A whole small read can simply be repeated, so a reset mid-body is retried."""
        if self.direct is not None:
            from bridge.retry import retrying

            try:
                obj = self.object(path)
            except KeyError:
                raise CheckFailed(f"{path} is not under {self.direct.uri()}") from None

            def fetch() -> bytes:
                with self.direct.open(obj) as stream:
                    return stream.read(limit + 1)

            with self.direct.errors(f"reading {self.direct.uri(obj.key)}"):
                data = retrying(f"reading {path}", fetch)
        else:
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
        profile=settings.source_profile,
    )


@contextlib.contextmanager
def _http_stream(repo, path: str) -> Iterator[BinaryIO]:
    body = _http_body(repo, path, 0)
    try:
        yield body
    finally:
        body.close()


class _HttpBody:
    """The body of one streaming artifact GET: ``read(n)`` and ``close()``.

    A body read to its end gives its connection back to the session's pool for the
    next request (keep-alive); ``requests``' own ``Response.close()`` would close it,
    as it does for any response whose content it did not read itself, so every file
    would cost a new connection (and, on servers that run a thread per connection,
    a new thread). A body closed before its end closes its connection."""

    def __init__(self, resp):
        self._resp = resp
        self.read = resp.raw.read
        self.etag = resp.headers.get("ETag", "")

    def close(self) -> None:
        raw = self._resp.raw
        if raw.length_remaining == 0 and raw.isclosed():
            raw.release_conn()
        else:
            self._resp.close()


def _signed_get(presigned, byte_range: str | None, accept, if_match: str | None = None):
    """A streaming GET of a presigned URL; ``accept(resp)`` raises when the answer is not
    what was asked (it sees error answers first). The response is closed on any failure.

    No other credentials go with it (``auth`` set: requests would otherwise look up
    ~/.netrc for every request and could add an Authorization header, which S3 refuses
    next to a signed URL)."""
    from bridge.mlflow_http import session

    headers = dict(presigned.headers or {})
    if byte_range:
        headers["Range"] = byte_range
    if if_match:
        headers["If-Match"] = if_match
    # MLflow's cloud_storage_http_request policy: 5 retries, backoff 2 s, jitter 1 s.
    resp = session(5, 2, 1.0).request(
        "get",
        presigned.url,
        headers=headers,
        stream=True,
        timeout=(5, 60),
        auth=_url_signed,
        allow_redirects=os.environ.get("MLFLOW_ALLOW_HTTP_REDIRECTS", "true").lower()
        in ("true", "1"),
    )
    try:
        accept(resp)
        resp.raise_for_status()
        resp.raw.decode_content = True
        return resp
    except BaseException:
        resp.close()
        raise


def _url_signed(request):
    """requests auth for presigned URLs: the signature is in the URL; add nothing."""
    return request


def _presigned_body(repo, path: str, offset: int, if_match: str | None = None) -> _HttpBody:
    def accept(resp) -> None:
        if if_match and resp.status_code == 412:
            raise TemporaryError(
                f"{path}: it changed while it was read (another ETag); it will be copied again"
            )
        if resp.status_code >= 400:
            return  # raise_for_status says what failed
        if offset and resp.status_code != 206:
            raise TemporaryError(f"{path}: the store ignored the byte range; it will be read again")
        if if_match and resp.headers.get("ETag", "") != if_match:
            raise TemporaryError(
                f"{path}: it changed while it was read (another ETag); it will be copied again"
            )

    presigned = repo._get_presigned_download_url(path)
    byte_range = f"bytes={offset}-" if offset else None
    return _HttpBody(_signed_get(presigned, byte_range, accept, if_match))


class _RangeBody(_HttpBody):
    def __init__(self, resp, etag: str, total: int):
        super().__init__(resp)
        self.etag = etag
        self.total = total


def _range_body(presigned, path: str, start: int, end: int) -> _RangeBody:
    def accept(resp) -> None:
        if resp.status_code >= 400:
            return  # raise_for_status says what failed
        # "bytes <first>-<last>/<size>" (RFC 9110 14.4): anything else is not the range asked
        unit, _, spec = resp.headers.get("Content-Range", "").partition(" ")
        if resp.status_code != 206 or unit != "bytes" or spec.partition("/")[0] != span:
            raise TemporaryError(
                f"{path}: the store did not answer with bytes {span}; it will be read again"
            )

    span = f"{start}-{end - 1}"
    resp = _signed_get(presigned, f"bytes={span}", accept)
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    return _RangeBody(resp, resp.headers.get("ETag", ""), int(total) if total.isdigit() else -1)


def _proxy_get(repo, path: str, headers: dict | None):
    """A streaming GET of ``path`` through the artifact proxy, and how to check it."""
    from bridge.mlflow_artifacts import ProxyRepo, raise_for_status

    if isinstance(repo, ProxyRepo):
        return repo.get(path, headers), raise_for_status
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import augmented_raise_for_status, http_request

    creds = get_default_host_creds(repo.artifact_uri)
    endpoint = posixpath.join("/", path)
    resp = http_request(creds, endpoint, "GET", stream=True, extra_headers=headers)
    return resp, augmented_raise_for_status


def _http_body(repo, path: str, offset: int) -> _HttpBody:
    headers = {"Range": f"bytes={offset}-"} if offset else None
    resp, raise_for_status = _proxy_get(repo, path, headers)
    try:
        raise_for_status(resp)
        resp.raw.decode_content = True
        body = _HttpBody(resp)
        if offset and resp.status_code != 206:
            # the server sent the whole file: skip what was already read
            skip = offset
            while skip:
                got = resp.raw.read(min(skip, _CHUNK))
                if not got:
                    break
                skip -= len(got)
    except BaseException:
        resp.close()
        raise
    return body


# --- promotion: alias and tag writes, run metrics, model checks (bridge promote) ---


# MLflow's limit for a registered-model tag value (mlflow.utils.validation); the
# history is trimmed to fit. Older servers allowed 5000 characters: stay within that
# unless the installed client says more, and never assume more than 100 000.
def tag_value_limit() -> int:
    validation = sys.modules.get("mlflow.utils.validation")
    if validation is None:  # not imported here: the lowest MLflow bridge supports (3.17)
        return 100_000
    limit = getattr(validation, "MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH", 5000)
    return min(int(limit), 100_000)


class PromotionRegistry(Registry):
    """The reads and writes ``bridge promote`` / ``rollback`` / ``history`` need."""

    def registered_model(self, name: str) -> RegisteredModelInfo:
        return self.registered_models([name])[0]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with self._errors(f"setting alias {alias!r} of model {name!r} to version {version}"):
            self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Idempotent: an alias that is already gone is fine."""
        try:
            with self._errors(f"removing alias {alias!r} of model {name!r}"):
                self.client.delete_registered_model_alias(name, alias)
        except NotFound:
            pass

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        with self._errors(f"setting tag {key!r} of model {name!r}"):
            self.client.set_registered_model_tag(name, key, value)

    def delete_model_tag(self, name: str, key: str) -> None:
        """Idempotent: a tag that is already gone is fine."""
        try:
            with self._errors(f"removing tag {key!r} of model {name!r}"):
                self.client.delete_registered_model_tag(name, key)
        except NotFound:
            pass

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """Latest value of every metric logged on a run."""
        with self._errors(f"run {run_id}"):
            run = self.client.get_run(run_id)
        return {k: float(v) for k, v in run.data.metrics.items()}

    def mlmodel(self, info: ModelVersionInfo) -> bytes:
        return self.artifact_source(info).read_bytes("MLmodel")

    def validate_serving_example(self, info: ModelVersionInfo, mlmodel: bytes) -> str:
        """Parse and check the saved serving input example as MLflow's scoring server would.

        Uses the scoring server's own parser and the schema enforcement pyfunc
        runs before ``predict`` -- without loading the model. Returns a short
        description of the example; raises CheckFailed when it does not
        validate and UsageError when there is no example or signature.
        """
        import yaml

        spec = yaml.safe_load(mlmodel) or {}
        example_info = spec.get("saved_input_example_info") or {}
        path = example_info.get("serving_input_path")
        if not path:
            raise UsageError(f"model {info.name!r} version {info.version} has no input example")
        source = self.artifact_source(info)
        serving_input = source.read_bytes(path).decode("utf-8")
        try:
            from mlflow.models import Model
            from mlflow.pyfunc import _validate_prediction_input
            from mlflow.pyfunc.scoring_server import _parse_json_data
        except ImportError as exc:
            raise PermanentError(
                f"validating the input example needs pandas and numpy ({exc})",
                hint="pip install 'mlflow-kubeflow-bridge[promote]'",
            ) from None
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="bridge-mlmodel-") as tmp:
            with open(os.path.join(tmp, "MLmodel"), "wb") as fh:
                fh.write(mlmodel)
            meta = Model.load(tmp)
        input_schema = meta.get_input_schema()
        if input_schema is None:
            raise UsageError(f"model {info.name!r} version {info.version} has no input signature")
        try:
            parsed = _parse_json_data(serving_input, meta, input_schema)
            _validate_prediction_input(
                parsed.data, parsed.params, input_schema, meta.get_params_schema()
            )
        except (MlflowException, ValueError, TypeError, KeyError) as exc:
            raise CheckFailed(
                f"{path} does not validate against the signature: {schema_error(exc)}"
            ) from None
        shape = getattr(parsed.data, "shape", None)
        rows = f"{shape[0]} row(s)" if shape else type(parsed.data).__name__
        return f"{path} ({rows}) validates against the signature {input_schema.input_names()}"


def schema_error(exc: BaseException) -> str:
    """The useful part of an MLflow schema error (it starts by echoing the whole input)."""
    text = " ".join(str(exc).split())
    _, sep, why = text.partition(" Error: ")
    return (why if sep else text)[:500]
