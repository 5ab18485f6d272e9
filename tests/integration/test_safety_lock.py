"""The promotion lock cannot be forged into a denial of service (issue 13.9).

Anyone who may set tags on a registered model can write the ``bridge.lock`` tag
(MLflow has no per-tag permission: ``MlflowClient.set_registered_model_tag``).
A lock whose expiry is not a time, or lies further ahead than the configured TTL
allows, is stale: promote and rollback go ahead with a warning. Runs against the
real local MLflow server with the real command line.
"""

from __future__ import annotations

import json
import time

import pytest

from .conftest import unique

pytestmark = pytest.mark.integration

TTL = 300
FAST = {"BRIDGE_PROMOTE_LOCK_SETTLE": "0.1", "BRIDGE_PROMOTE_LOCK_TTL": str(TTL)}


def _lock(expires) -> str:
    return json.dumps({"token": "hostile", "owner": "mallory@x:1", "at": "now", "expires": expires})


HOSTILE_LOCKS = {
    "huge": _lock(1e308),
    "infinite": '{"token": "hostile", "owner": "mallory", "expires": Infinity}',
    "nan": '{"token": "hostile", "owner": "mallory", "expires": NaN}',
    "not a number": _lock("next tuesday"),
    "a list": _lock([1, 2]),
    "a boolean": _lock(True),
    "missing": json.dumps({"token": "hostile", "owner": "mallory"}),
    "far beyond the TTL": _lock(time.time() + 100 * TTL),
    "token not a string": json.dumps({"token": 7, "expires": time.time() + 100 * TTL}),
    "not JSON": "locked!!",
    "not an object": "[1, 2, 3]",
}


@pytest.fixture
def model(scope, register, client):
    name = unique("lock-dos")
    v1, v2 = register(name, 2)
    client.set_registered_model_alias(name, scope.alias, v1)
    return name, v1, v2


@pytest.mark.parametrize("kind", sorted(HOSTILE_LOCKS))
def test_a_forged_lock_does_not_block_promote_or_rollback(scope, client, model, kind):
    name, v1, v2 = model
    client.set_registered_model_tag(name, "bridge.lock", HOSTILE_LOCKS[kind])
    res = scope.run("promote", name, "--version", v2, env=FAST)
    assert res.returncode == 0, res.stderr
    assert "ignoring" in res.stderr and "bridge.lock" in res.stderr, res.stderr
    assert client.get_registered_model(name).aliases[scope.alias] == v2

    client.set_registered_model_tag(name, "bridge.lock", HOSTILE_LOCKS[kind])
    res = scope.run("rollback", name, "--to", v1, env=FAST)
    assert res.returncode == 0, res.stderr
    rm = client.get_registered_model(name)
    assert rm.aliases[scope.alias] == v1 and "bridge.lock" not in rm.tags


def test_a_lock_within_the_ttl_still_blocks(scope, client, model):
    """The bound does not turn the lock off: a holder inside the TTL keeps it."""
    name, _, v2 = model
    client.set_registered_model_tag(name, "bridge.lock", _lock(str(time.time() + TTL - 5)))
    res = scope.run("promote", name, "--version", v2, env=FAST)
    assert res.returncode == 1 and "being promoted by mallory@x:1" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
