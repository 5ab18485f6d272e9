"""MLflow request auth from a bearer token file, e.g. a projected service-account token.

``MLFLOW_TRACKING_AUTH=bearer-token-file`` and ``BRIDGE_MLFLOW_TOKEN_FILE=/path``: every
request MLflow's client sends carries ``Authorization: Bearer <the file's content>``. The
file is read again whenever it changes, because the kubelet rotates projected tokens in
place; a daemon running for weeks never sends an expired one. (MLflow's own
``MLFLOW_TRACKING_AUTH=kubernetes`` reads only the pod's default token path, or a
kubeconfig; a token projected with an audience for MLflow lives elsewhere.)

MLflow finds this provider through the ``mlflow.request_auth_provider`` entry point
(pyproject.toml), as it finds any request auth plugin.
"""

from __future__ import annotations

import os
import threading

from mlflow.exceptions import MlflowException
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

TOKEN_FILE_VARIABLE = "BRIDGE_MLFLOW_TOKEN_FILE"


class TokenFileAuth:
    """A ``requests`` auth callable: the token file's current content as a bearer token."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of what _token holds
        self._token = ""

    def token(self) -> str:
        try:
            st = os.stat(self.path)
            with self._lock:
                if self._seen != (st.st_mtime_ns, st.st_size):
                    with open(self.path, encoding="utf-8") as f:
                        self._token = f.read().strip()
                    self._seen = (st.st_mtime_ns, st.st_size)
                token = self._token
        except OSError as exc:
            raise MlflowException(
                f"{TOKEN_FILE_VARIABLE} {self.path} cannot be read ({exc.strerror}): "
                "mount the token there, or fix the path"
            ) from None
        if not token:
            raise MlflowException(f"{TOKEN_FILE_VARIABLE} {self.path} is empty")
        return token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request


class TokenFileRequestAuthProvider(RequestAuthProvider):
    def get_name(self) -> str:
        return "bearer-token-file"

    def get_auth(self):
        path = os.environ.get(TOKEN_FILE_VARIABLE, "").strip()
        if not path:
            raise MlflowException(
                f"MLFLOW_TRACKING_AUTH=bearer-token-file needs {TOKEN_FILE_VARIABLE}, "
                "the path of the token file"
            )
        return _auth_for(path)


_cache: dict[str, TokenFileAuth] = {}
_cache_lock = threading.Lock()


def _auth_for(path: str) -> TokenFileAuth:
    """One reader per path: MLflow asks for the auth object on every request."""
    with _cache_lock:
        if path not in _cache:
            _cache[path] = TokenFileAuth(path)
        return _cache[path]
