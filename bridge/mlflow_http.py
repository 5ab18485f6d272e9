"""Requests to an MLflow tracking server the way MLflow's client sends them, without MLflow.

``import mlflow`` runs MLflow's whole package init (tracing, GenAI with FastAPI and
pydantic, OpenTelemetry): about 50 MB and 0.6 s per process before any request. A
sync, a status or the daemon only reads and writes a few registry REST endpoints,
so against an ``http(s)://`` server they use this module instead. It follows
``http_request`` in mlflow/utils/rest_utils.py and ``_get_request_session`` in
mlflow/utils/request_utils.py (mlflow 3.17.2): the same environment variables for
credentials (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, also from
``~/.mlflow/credentials``, or ``MLFLOW_TRACKING_TOKEN``), TLS
(``MLFLOW_TRACKING_INSECURE_TLS``, ``..._SERVER_CERT_PATH``, ``..._CLIENT_CERT_PATH``),
retries (``MLFLOW_HTTP_REQUEST_*``: urllib3 retries on 408/429/5xx and connection
errors, every method, honouring Retry-After), timeouts, pooled keep-alive sessions
and redirects. Whatever this module does not do (another ``MLFLOW_TRACKING_AUTH``
provider, SigV4, workspaces, request-header plugins) makes :func:`lean_refusal`
name it, and the caller uses MLflow's own client.
"""

from __future__ import annotations

import base64
import configparser
import functools
import json
import os
import threading
from urllib.parse import urlparse

from bridge.redact import redact

TRANSIENT_CODES = frozenset([408, 429, 500, 502, 503, 504])

# MLflow's error codes for an error answer without a JSON body (mlflow/exceptions.py).
_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_ALREADY_EXISTS",
    429: "REQUEST_LIMIT_EXCEEDED",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
}

# The auth providers this module sends itself; any other MLFLOW_TRACKING_AUTH is MLflow's.
_OWN_AUTH = ("", "bearer-token-file")


class RestError(Exception):
    """An MLflow REST call that failed: the server's ``error_code`` and message, or a
    request that never got an answer (``status`` 0). Shaped like MLflow's
    ``RestException`` so that one translation serves both clients."""

    def __init__(self, message: str, error_code: str = "", status: int = 0):
        super().__init__(f"{error_code}: {message}" if error_code else message)
        self.error_code = error_code
        self.status = status

    def get_http_status_code(self) -> int:
        return self.status or 500


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _env_true(name: str, default: bool = False) -> bool:
    value = _env(name).lower()
    return default if not value else value in ("true", "1")


def _env_number(name: str, default: str, kind: type):
    """An MLflow numeric variable, parsed with the type MLflow gives it
    (mlflow/environment_variables.py); a bad value is the user's to fix."""
    value = _env(name) or default
    try:
        return kind(value)
    except ValueError as exc:
        from bridge.errors import UsageError

        raise UsageError(f"Failed to convert {value!r} for {name}: {exc}") from None


def lean_refusal(*uris: str | None) -> str | None:
    """Why MLflow's own client must be used for these URIs (one phrase), or None."""
    for uri in uris:
        if uri is not None and urlparse(uri).scheme not in ("http", "https"):
            return f"{redact(uri)} is not an http(s) MLflow server"
    auth = _env("MLFLOW_TRACKING_AUTH")
    if auth not in _OWN_AUTH:
        return f"MLFLOW_TRACKING_AUTH={auth} is an MLflow auth provider"
    if _env_true("MLFLOW_TRACKING_AWS_SIGV4"):
        return "MLFLOW_TRACKING_AWS_SIGV4 signs requests with MLflow's client"
    if _env("MLFLOW_WORKSPACE"):
        return "MLFLOW_WORKSPACE is set"
    if _header_plugins():
        return "an mlflow.request_header_provider plugin is installed"
    return None


@functools.cache
def _header_plugins() -> bool:
    from importlib.metadata import entry_points

    return bool(entry_points(group="mlflow.request_header_provider"))


def _basic_credentials() -> tuple[str, str] | None:
    user, password = _env("MLFLOW_TRACKING_USERNAME"), _env("MLFLOW_TRACKING_PASSWORD")
    if not (user and password):
        path = os.path.expanduser("~/.mlflow/credentials")
        if os.path.exists(path):
            cfg = configparser.ConfigParser()
            cfg.read(path)
            if "mlflow" in cfg:
                user = user or cfg["mlflow"].get("mlflow_tracking_username", "")
                password = password or cfg["mlflow"].get("mlflow_tracking_password", "")
    return (user, password) if user and password else None


def _auth_header() -> str | None:
    basic = _basic_credentials()
    if basic:
        return "Basic " + base64.standard_b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    token = _env("MLFLOW_TRACKING_TOKEN")
    return f"Bearer {token}" if token else None


def _request_auth():
    """``MLFLOW_TRACKING_AUTH=bearer-token-file``: bridge's own provider (it replaces the
    Authorization header, as MLflow applies a provider after its own headers)."""
    if _env("MLFLOW_TRACKING_AUTH") != "bearer-token-file":
        return None
    from bridge.token_file import auth_from_env

    return auth_from_env()


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"mlflow-kubeflow-bridge/{version('mlflow-kubeflow-bridge')}"
    except PackageNotFoundError:
        return "mlflow-kubeflow-bridge"


_sessions: dict[tuple, object] = {}
_sessions_lock = threading.Lock()


def session(max_retries: int, backoff_factor: float, backoff_jitter: float):
    """A pooled ``requests`` session with MLflow's retry policy; one per policy and process."""
    key = (max_retries, backoff_factor, backoff_jitter, os.getpid())
    with _sessions_lock:
        if key not in _sessions:
            _sessions[key] = _new_session(max_retries, backoff_factor, backoff_jitter)
        return _sessions[key]


def _new_session(max_retries: int, backoff_factor: float, backoff_jitter: float):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        redirect=max_retries,
        status=max_retries,
        status_forcelist=TRANSIENT_CODES,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_jitter,
        raise_on_status=True,
        respect_retry_after_header=_env_true("MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER", True),
        allowed_methods=None,
    )
    adapter = HTTPAdapter(
        pool_connections=_env_number("MLFLOW_HTTP_POOL_CONNECTIONS", "10", int),
        pool_maxsize=_env_number("MLFLOW_HTTP_POOL_MAXSIZE", "10", int),
        max_retries=retry,
    )
    s = requests.Session()
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s


class MlflowHttp:
    """One MLflow server (``host``: its base URL, any path prefix kept)."""

    def __init__(self, host: str):
        self.host = host.rstrip("/")

    def request(self, method: str, endpoint: str, **kwargs):
        """The server's response (retried as MLflow retries); RestError when none came."""
        import requests

        headers = {"User-Agent": _user_agent(), **(kwargs.pop("headers", None) or {})}
        auth_header = _auth_header()
        if auth_header:
            headers["Authorization"] = auth_header
        server_cert = _env("MLFLOW_TRACKING_SERVER_CERT_PATH")
        verify = server_cert or not _env_true("MLFLOW_TRACKING_INSECURE_TLS")
        client_cert = _env("MLFLOW_TRACKING_CLIENT_CERT_PATH")
        if client_cert:
            kwargs["cert"] = client_cert
        auth = _request_auth()
        if auth is not None:
            kwargs["auth"] = auth
        url = self.host + endpoint
        s = session(
            _env_number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7", int),
            _env_number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2", int),
            _env_number("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "1.0", float),
        )
        timeout = _env_number("MLFLOW_HTTP_REQUEST_TIMEOUT", "120", int)
        try:
            return s.request(
                method,
                url,
                headers=headers,
                verify=verify,
                timeout=timeout,
                allow_redirects=_env_true("MLFLOW_ALLOW_HTTP_REDIRECTS", True),
                **kwargs,
            )
        except requests.exceptions.Timeout as exc:
            raise RestError(f"API request to {url} failed with timeout exception {exc}") from None
        except Exception as exc:  # as MLflow: every failure to get an answer is one error
            raise RestError(f"API request to {url} failed with exception {exc}") from None

    def call(self, method: str, endpoint: str, body: dict | None = None) -> dict:
        """One JSON REST call (GET sends ``body`` as the query) and its JSON answer."""
        body = {k: v for k, v in (body or {}).items() if v is not None}
        sent = {"params": body} if method == "GET" else {"json": body}
        resp = self.request(method, endpoint, **sent)
        return answer(resp, endpoint)


def answer(resp, endpoint: str) -> dict:
    """The JSON object of a 200 answer; RestError for anything else (as
    ``verify_rest_response`` in mlflow/utils/rest_utils.py)."""
    text = resp.text
    try:
        parsed = json.loads(text) if text.strip() else {}
    except ValueError:
        parsed = None
    if resp.status_code != 200:
        if isinstance(parsed, dict) and parsed.get("error_code"):
            raise RestError(
                str(parsed.get("message", "")), str(parsed["error_code"]), resp.status_code
            )
        code = _STATUS_CODES.get(resp.status_code, "INTERNAL_ERROR")
        raise RestError(
            f"API request to endpoint {endpoint} failed with error code {resp.status_code} "
            f"!= 200. Response body: '{text[:500]}'",
            code,
            resp.status_code,
        )
    if not isinstance(parsed, dict):
        raise RestError(
            f"API request to endpoint {endpoint} was successful but the response body was "
            f"not in a valid JSON format. Response body: '{text[:200]}'",
            "INTERNAL_ERROR",
            502,
        )
    return parsed
