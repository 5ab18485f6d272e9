"""The registered-model listing read from the MLflow server's JSON, against the real server.

``Registry.registered_model_pages`` reads each page of ``search_registered_models``
as the JSON the server sends (the RegisteredModel message of
mlflow/protos/model_registry.proto, written by ``message_to_json`` in
mlflow/server/handlers.py ``_search_registered_models``), on the endpoint and with
the request helper MLflow's own REST store uses (``call_endpoint`` in
mlflow/utils/rest_utils.py), in the installed mlflow 3.17.2, or (BRIDGE_MLFLOW_CLIENT
auto, the default) with bridge's own requests (bridge/mlflow_http.py). These tests
hold both to what MLflow's client makes of the same answer.
"""

from __future__ import annotations

import pytest

from bridge.registry import Registry, _model_info, listed_versions
from bridge.settings import load_settings

from .conftest import unique
from .transfer_support import create_version, model_files

pytestmark = pytest.mark.integration


def _through_the_client(client, names: set[str]):
    found, token = {}, None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        found.update({rm.name: _model_info(rm) for rm in page if rm.name in names})
        token = page.token
        if not token:
            return found


@pytest.mark.parametrize("mode", ["auto", "mlflow"])
def test_the_json_listing_reads_what_mlflows_client_reads(scope, client, s3, mode):
    base = unique("listing")
    odd = f'{base} it\'s "odd"\nline ünï'
    plain, runless, staged = f"{base}-plain", f"{base}-runless", f"{base}-staged"
    create_version(client, s3, plain, model_files(big=64, small=1))
    v2 = create_version(client, s3, plain, model_files(big=64, small=1, seed=1))
    create_version(client, s3, runless, model_files(big=64, small=1), scheme="s3", with_run=False)
    create_version(client, s3, odd, model_files(big=64, small=1))
    s1 = create_version(client, s3, staged, model_files(big=64, small=1))
    create_version(client, s3, staged, model_files(big=64, small=1, seed=3))
    client.set_registered_model_alias(plain, scope.alias, v2)
    client.set_registered_model_alias(plain, "other", "1")
    client.set_registered_model_tag(plain, "bridge.namespace", "team-a")
    client.set_registered_model_tag(plain, "empty", "")
    client.set_model_version_tag(plain, v2, "note", "tagged")
    client.set_registered_model_alias(odd, scope.alias, "1")
    client.transition_model_version_stage(staged, s1, "Production")
    names = {plain, runless, odd, staged}

    registry = Registry(load_settings({"mlflow_client": mode}))
    # the JSON path is the one under test: bridge's own requests, or MLflow's REST store
    assert registry.lean if mode == "auto" else registry._rest_store is not None
    pages = list(registry.registered_model_pages())
    ours = {m.name: m for page in pages for m in page if m.name in names}
    theirs = _through_the_client(client, names)

    assert set(ours) == names
    for name in names:
        assert ours[name] == theirs[name], name
        assert ours[name].versions == theirs[name].versions, name
    assert ours[plain].aliases == {scope.alias: v2, "other": "1"}
    assert ours[plain].tags == {"bridge.namespace": "team-a", "empty": ""}
    assert ours[plain].versions[v2].tags == {"note": "tagged"}
    assert ours[plain].versions[v2].run_id and ours[plain].versions[v2].status == "READY"
    assert ours[runless].versions["1"].run_id is None
    assert ours[staged].stages == {"Production": s1}
    assert set(ours[staged].versions) == {s1, "2"}  # latest of "Production" and of "None"
    # the alias on the latest version needs no read; the other alias does
    assert set(listed_versions(list(ours.values()), [(plain, v2), (plain, "1")])) == {(plain, v2)}


def test_named_models_and_a_missing_one(scope, client, s3):
    name = unique("listing-named")
    v = create_version(client, s3, name, model_files(big=64, small=1))
    registry = Registry(load_settings())
    [[m]] = list(registry.registered_model_pages([name]))
    assert m.versions[v].source == client.get_model_version(name, v).source
    from bridge.registry import NotFound

    with pytest.raises(NotFound):
        list(registry.registered_model_pages([unique("listing-missing")]))
