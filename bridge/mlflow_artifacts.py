"""MLflow's artifact proxy (``mlflow-artifacts:`` URIs) read without MLflow.

The same requests as MLflow's ``MlflowArtifactsRepository`` / ``HttpArtifactRepository``
(mlflow/store/artifact/mlflow_artifacts_repo.py and http_artifact_repo.py, mlflow
3.17.2): the URI resolved against the tracking server, directories listed with
``GET /api/2.0/mlflow-artifacts/artifacts?path=``, a file read with
``GET .../artifacts/<path>``, a presigned URL asked for at
``/api/2.0/mlflow-artifacts/presigned/<path>``, and whether the server hands those out
read from ``/api/3.0/mlflow/server-info`` unless MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD
says. Credentials, retries and sessions are bridge.mlflow_http's (MLflow's rules).
"""

from __future__ import annotations

import functools
import posixpath
import re
from types import SimpleNamespace
from urllib.parse import quote, urlparse, urlunparse

from bridge.mlflow_http import MlflowHttp, RestError, _env

_SERVICE = "/mlflow-artifacts/artifacts"
_ROOT = "/api/2.0" + _SERVICE
_SERVER_INFO = "/api/3.0/mlflow/server-info"


def resolve_uri(artifact_uri: str, tracking_uri: str) -> str | None:
    """The HTTP URL of an artifact URI on the tracking server's proxy, or None when it
    is not one (``MlflowArtifactsRepository.resolve_uri``)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("http", "https"):
        return artifact_uri.rstrip("/") if _SERVICE in parsed.path else None
    if parsed.scheme != "mlflow-artifacts":
        return None
    track = urlparse(tracking_uri)
    if parsed.path == "/":
        path = _ROOT + "/"
    elif parsed.path == _ROOT:
        path = _ROOT
    else:
        path = f"{track.path}/{_ROOT}/{parsed.path}"
    path = re.sub(r"//+", "/", path)
    url = urlunparse((track.scheme, parsed.netloc or track.netloc, path, "", "", ""))
    return url.replace("///", "/").rstrip("/")


def _safe(path: str) -> str:
    """A listed path as MLflow's ``validate_path_is_safe`` accepts it: relative, no ``..``."""
    parts = path.replace("\\", "/").split("/")
    if path.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", path):
        raise RestError(
            f"the artifact proxy listed an unsafe path {path!r}", "INVALID_PARAMETER_VALUE", 400
        )
    return path


def raise_for_status(resp) -> None:
    """``requests``' raise_for_status with the answer's text (MLflow's
    ``augmented_raise_for_status``)."""
    from requests import HTTPError

    try:
        resp.raise_for_status()
    except HTTPError as exc:
        if resp.text:
            raise HTTPError(f"{exc}. Response text: {resp.text}", response=resp) from None
        raise


class ProxyRepo:
    """The files under one artifact URI on MLflow's artifact proxy."""

    def __init__(self, artifact_uri: str):
        self.artifact_uri = artifact_uri
        self._base, _, tail = artifact_uri.partition(_SERVICE)  # base ends in /api/2.0
        self._root = tail.strip("/")

    def list_artifacts(self, path: str | None = None) -> list[SimpleNamespace]:
        params = {"path": posixpath.join(self._root, path) if path else self._root}
        resp = MlflowHttp(self._base).request("GET", _SERVICE, params=params)
        raise_for_status(resp)
        files = []
        for f in resp.json().get("files", []):
            rel = _safe(f["path"])
            files.append(
                SimpleNamespace(
                    path=posixpath.join(path, rel) if path else rel,
                    is_dir=bool(f.get("is_dir")),
                    file_size=int(f["file_size"]) if "file_size" in f else None,
                )
            )
        # A path naming a single file lists as nothing (MLflow's contract).
        if (
            len(files) == 1
            and not files[0].is_dir
            and path is not None
            and files[0].path == posixpath.join(path, posixpath.basename(path))
        ):
            return []
        return sorted(files, key=lambda f: f.path)

    def get(self, path: str, headers: dict | None = None):
        """A streaming GET of one file through the proxy (the caller closes it)."""
        endpoint = "/" + quote(path.lstrip("/"))
        return MlflowHttp(self.artifact_uri).request("GET", endpoint, stream=True, headers=headers)

    def _get_presigned_download_url(self, path: str) -> SimpleNamespace:
        rel = "/".join(p for p in (self._root, path.strip("/")) if p)
        endpoint = "/mlflow-artifacts/presigned/" + quote(rel)
        resp = MlflowHttp(self._base).request("GET", endpoint)
        raise_for_status(resp)
        got = resp.json()
        return SimpleNamespace(
            url=got["url"], headers=got.get("headers") or {}, file_size=got.get("file_size")
        )

    def _is_multipart_download_enabled(self) -> bool:
        setting = _env("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD").lower()
        if setting:
            return setting in ("true", "1")
        return self._server_presigns

    @functools.cached_property
    def _server_presigns(self) -> bool:
        server = self._base[: -len("/api/2.0")] if self._base.endswith("/api/2.0") else self._base
        try:
            resp = MlflowHttp(server).request("GET", _SERVER_INFO)
            if resp.status_code != 200:
                return False
            return bool(resp.json().get("multipart_downloads_enabled", False))
        except (RestError, ValueError):
            return False
