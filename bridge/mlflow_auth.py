"""MLflow request auth from a bearer token file (see bridge.token_file).

``MLFLOW_TRACKING_AUTH=bearer-token-file`` and ``BRIDGE_MLFLOW_TOKEN_FILE=/path``: every
request MLflow's client sends carries ``Authorization: Bearer <the file's content>``,
re-read when the file changes. (MLflow's own ``MLFLOW_TRACKING_AUTH=kubernetes`` reads
only the pod's default token path, or a kubeconfig; a token projected with an audience
for MLflow lives elsewhere.)

MLflow finds this provider through the ``mlflow.request_auth_provider`` entry point
(pyproject.toml), as it finds any request auth plugin.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from bridge.token_file import TOKEN_FILE_VARIABLE, TokenFileAuth, TokenFileError, auth_from_env

__all__ = ["TOKEN_FILE_VARIABLE", "TokenFileAuth", "TokenFileRequestAuthProvider"]


class _MlflowTokenFileAuth:
    """The reader, with its failures as MLflow's exception (what MLflow's client expects)."""

    def __init__(self, reader: TokenFileAuth):
        self.reader = reader

    def __call__(self, request):
        try:
            return self.reader(request)
        except TokenFileError as exc:
            raise MlflowException(str(exc)) from None


class TokenFileRequestAuthProvider(RequestAuthProvider):
    def get_name(self) -> str:
        return "bearer-token-file"

    def get_auth(self):
        try:
            return _MlflowTokenFileAuth(auth_from_env())
        except TokenFileError as exc:
            raise MlflowException(str(exc)) from None
