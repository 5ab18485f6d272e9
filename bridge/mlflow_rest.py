"""The part of ``MlflowClient`` that bridge uses, over MLflow's REST API without MLflow.

Same method names, arguments and answers (attribute objects shaped like MLflow's
entities, pages with ``.token``) so that bridge.registry has one code path. The
endpoints and their JSON are MLflow's REST API (mlflow/protos/model_registry.proto
and service.proto, served by mlflow/server/handlers.py, mlflow 3.17.2): int64
fields such as ``version`` come as strings, maps as lists of key/value pairs.
"""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import quote

from bridge.mlflow_http import MlflowHttp

_REGISTRY = "/api/2.0/mlflow/registered-models"
_VERSIONS = "/api/2.0/mlflow/model-versions"
_TRACKING = "/api/2.0/mlflow"


class Page(list):
    """A page of results and the server's token for the next one (empty: last page)."""

    def __init__(self, items, token: str | None):
        super().__init__(items)
        self.token = token or None


def _pairs(items, key: str = "key", value: str = "value") -> dict[str, str]:
    return {str(i[key]): str(i.get(value, "")) for i in items or [] if key in i}


def model_version(d: dict) -> SimpleNamespace:
    return SimpleNamespace(
        name=d.get("name", ""),
        version=str(d.get("version", "")),
        run_id=d.get("run_id") or None,
        source=str(d.get("source", "")),
        status=str(d.get("status", "")),
        current_stage=str(d.get("current_stage", "None")),
        tags=_pairs(d.get("tags")),
        aliases=list(d.get("aliases") or []),
        model_id=d.get("model_id") or None,
    )


def registered_model(d: dict) -> SimpleNamespace:
    return SimpleNamespace(
        name=d.get("name", ""),
        aliases=_pairs(d.get("aliases"), "alias", "version"),
        tags=_pairs(d.get("tags")),
        latest_versions=[model_version(mv) for mv in d.get("latest_versions") or []],
    )


def run(d: dict) -> SimpleNamespace:
    info, data = d.get("info") or {}, d.get("data") or {}
    return SimpleNamespace(
        info=SimpleNamespace(
            run_id=info.get("run_id", ""),
            experiment_id=str(info.get("experiment_id", "")),
            run_name=info.get("run_name"),
            status=str(info.get("status", "")),
            artifact_uri=info.get("artifact_uri", ""),
        ),
        data=SimpleNamespace(
            tags=_pairs(data.get("tags")),
            params=_pairs(data.get("params")),
            metrics={str(m["key"]): float(m.get("value", 0)) for m in data.get("metrics") or []},
        ),
    )


class RestClient:
    """``MlflowClient``'s registry and run reads, and the alias and tag writes."""

    VIEW_ALL = "ALL"  # ViewType.ALL as the REST API spells it

    def __init__(self, tracking_uri: str, registry_uri: str | None = None):
        self.tracking = MlflowHttp(tracking_uri)
        self.registry = MlflowHttp(registry_uri or tracking_uri)

    def registry_call(self, method: str, endpoint: str, body: dict) -> dict:
        return self.registry.call(method, endpoint, body)

    # -- registered models and versions --

    def get_registered_model(self, name: str):
        got = self.registry.call("GET", f"{_REGISTRY}/get", {"name": name})
        return registered_model(got.get("registered_model") or {})

    def search_registered_models(self, max_results: int = 1000, page_token: str | None = None):
        got = self.search_registered_models_json(max_results, page_token)
        return Page(
            [registered_model(rm) for rm in got.get("registered_models") or []],
            got.get("next_page_token"),
        )

    def search_registered_models_json(self, max_results: int, page_token: str | None) -> dict:
        body = {"max_results": max_results, "page_token": page_token}
        return self.registry.call("GET", f"{_REGISTRY}/search", body)

    def get_model_version(self, name: str, version: str):
        body = {"name": name, "version": str(version)}
        got = self.registry.call("GET", f"{_VERSIONS}/get", body)
        return model_version(got.get("model_version") or {})

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        body = {"name": name, "version": str(version)}
        return str(self.registry.call("GET", f"{_VERSIONS}/get-download-uri", body)["artifact_uri"])

    def search_model_versions(
        self, filter_string: str = "", max_results: int = 10000, page_token: str | None = None
    ):
        body = {"filter": filter_string, "max_results": max_results, "page_token": page_token}
        got = self.registry.call("GET", f"{_VERSIONS}/search", body)
        return Page(
            [model_version(mv) for mv in got.get("model_versions") or []],
            got.get("next_page_token"),
        )

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        body = {"name": name, "alias": alias, "version": str(version)}
        self.registry.call("POST", f"{_REGISTRY}/alias", body)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.registry.call("DELETE", f"{_REGISTRY}/alias", {"name": name, "alias": alias})

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        body = {"name": name, "key": key, "value": value}
        self.registry.call("POST", f"{_REGISTRY}/set-tag", body)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self.registry.call("DELETE", f"{_REGISTRY}/delete-tag", {"name": name, "key": key})

    # -- runs, experiments, logged models (tracking server) --

    def get_run(self, run_id: str):
        got = self.tracking.call("GET", f"{_TRACKING}/runs/get", {"run_id": run_id})
        return run(got.get("run") or {})

    def get_experiment(self, experiment_id: str):
        body = {"experiment_id": str(experiment_id)}
        got = self.tracking.call("GET", f"{_TRACKING}/experiments/get", body)
        e = got.get("experiment") or {}
        return SimpleNamespace(
            experiment_id=str(e.get("experiment_id", "")),
            name=e.get("name", ""),
            artifact_location=e.get("artifact_location", ""),
        )

    def get_logged_model(self, model_id: str):
        got = self.tracking.call("GET", f"{_TRACKING}/logged-models/{quote(model_id, safe='')}")
        info = (got.get("model") or {}).get("info") or {}
        return SimpleNamespace(
            model_id=info.get("model_id", model_id),
            experiment_id=str(info.get("experiment_id", "")),
            artifact_location=info.get("artifact_uri", ""),
        )

    def search_experiments(
        self, view_type=VIEW_ALL, max_results: int = 1000, page_token: str | None = None
    ):
        body = {"view_type": view_type, "max_results": max_results, "page_token": page_token}
        got = self.tracking.call("POST", f"{_TRACKING}/experiments/search", body)
        experiments = [
            SimpleNamespace(experiment_id=str(e.get("experiment_id", "")), name=e.get("name", ""))
            for e in got.get("experiments") or []
        ]
        return Page(experiments, got.get("next_page_token"))

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        run_view_type=VIEW_ALL,
        max_results: int = 1000,
        page_token: str | None = None,
    ):
        body = {
            "experiment_ids": list(experiment_ids),
            "filter": filter_string,
            "run_view_type": run_view_type,
            "max_results": max_results,
            "page_token": page_token,
        }
        got = self.tracking.call("POST", f"{_TRACKING}/runs/search", body)
        return Page([run(r) for r in got.get("runs") or []], got.get("next_page_token"))
