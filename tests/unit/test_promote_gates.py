"""Gates of bridge.promote that need no server (the real server only makes READY versions)."""

from __future__ import annotations

from bridge.promote import PromotionResult, _flavor_gates, _version_gate
from bridge.registry import ModelVersionInfo


def _info(status):
    return ModelVersionInfo("m", "3", "run", "models:/m-1", status, "mlflow-artifacts:/x")


def test_version_not_ready_fails():
    assert _version_gate(_info("READY")).passed
    gate = _version_gate(_info("PENDING_REGISTRATION"))
    assert not gate.passed and "PENDING_REGISTRATION" in gate.message


def test_flavor_and_signature_gates():
    ok = b"flavors:\n  python_function: {loader_module: x}\nsignature:\n  inputs: '[]'\n"
    assert [g.status for g in _flavor_gates(ok, "fail")] == ["passed", "passed"]
    bare = b"flavors:\n  custom: {}\n"
    assert [g.status for g in _flavor_gates(bare, "fail")] == ["failed", "failed"]
    assert [g.status for g in _flavor_gates(bare, "warn")] == ["failed", "warned"]
    assert _flavor_gates(b"flavors: [unclosed", "fail")[0].status == "failed"


def test_exit_codes_of_a_result():
    r = PromotionResult("m", "1", "champion", None, dry_run=True)
    assert r.exit_code == 0 and r.as_dict()["would_promote"] is True
    r.dry_run = False
    assert r.exit_code == 1  # not promoted
    r.promoted = True
    assert r.exit_code == 0
    keys = {"promoted", "model", "version", "alias", "previous_version", "dry_run", "gates"}
    assert keys <= set(r.as_dict())
