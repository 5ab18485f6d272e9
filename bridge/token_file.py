"""A bearer token read from a file, e.g. a projected service-account token.

Every request carries ``Authorization: Bearer <the file's content>``. The file is
read again whenever it changes, because the kubelet rotates projected tokens in
place; a daemon running for weeks never sends an expired one. Used by bridge's own
MLflow requests (bridge.mlflow_http) and, as an MLflow request-auth plugin, by
MLflow's client (bridge.mlflow_auth); it imports nothing of MLflow.
"""

from __future__ import annotations

import os
import threading

TOKEN_FILE_VARIABLE = "BRIDGE_MLFLOW_TOKEN_FILE"


class TokenFileError(Exception):
    """The token file is not set, cannot be read, or is empty."""


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
            raise TokenFileError(
                f"{TOKEN_FILE_VARIABLE} {self.path} cannot be read ({exc.strerror}): "
                "mount the token there, or fix the path"
            ) from None
        if not token:
            raise TokenFileError(f"{TOKEN_FILE_VARIABLE} {self.path} is empty")
        return token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request


_cache: dict[str, TokenFileAuth] = {}
_cache_lock = threading.Lock()


def auth_from_env() -> TokenFileAuth:
    """The reader for BRIDGE_MLFLOW_TOKEN_FILE; one per path (asked for on every request)."""
    path = os.environ.get(TOKEN_FILE_VARIABLE, "").strip()
    if not path:
        raise TokenFileError(
            f"MLFLOW_TRACKING_AUTH=bearer-token-file needs {TOKEN_FILE_VARIABLE}, "
            "the path of the token file"
        )
    with _cache_lock:
        if path not in _cache:
            _cache[path] = TokenFileAuth(path)
        return _cache[path]
