"""`bridge promote` / `rollback` / `history` against the real local MLflow server and S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from bridge.names import k8s_name

from .conftest import unique

pytestmark = pytest.mark.integration

BLOCKING_MODEL = str(Path(__file__).with_name("blocking_model.py"))
ALL_GATES = {
    "version-ready",
    "pyfunc-flavor",
    "signature",
    "input-example",
    "require accuracy>=0.9",
    "no-regression accuracy",
    "smoke",
    "artifact-integrity",
}
# Most tests do not race; keep their lock settle short. The concurrency tests use the default.
FAST = {"BRIDGE_PROMOTE_LOCK_SETTLE": "0.1"}


def promote(scope, model, *args, env=None):
    res = scope.run("promote", model, *args, "--output", "json", env={**FAST, **(env or {})})
    try:
        body = json.loads(res.stdout)
    except ValueError:
        body = None
    return res, body


def gates_by_name(body):
    return {g["name"]: g for g in body["gates"]}


def snapshot(client, model):
    rm = client.get_registered_model(model)
    versions = client.search_model_versions(f"name='{model}'")
    return (
        dict(rm.aliases),
        dict(rm.tags),
        sorted((v.version, v.status, tuple(sorted(v.tags.items()))) for v in versions),
    )


def log_blocking_model(name, gate_dir, X, accuracy=0.95):
    """Register a pyfunc model whose predict the test steers through files in gate_dir."""
    import mlflow

    mlflow.set_experiment("bridge-tests")
    with mlflow.start_run():
        mlflow.log_metric("accuracy", accuracy)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=BLOCKING_MODEL,
            model_config={"gate_dir": str(gate_dir)},
            input_example=X.head(3),
            registered_model_name=name,
            pip_requirements=["mlflow"],
        )
    return str(info.registered_model_version)


def publish(scope, model, version):
    """Publish a version to the target store with the product's own publisher."""
    from bridge.publish import Publisher
    from bridge.registry import Registry
    from bridge.settings import load_settings
    from bridge.store import Store

    settings = load_settings({"target_uri": scope.target_uri})
    registry = Registry(settings)
    info = registry.model_version(model, version)
    return Publisher(Store(settings)).publish(info, registry.artifact_source(info), k8s_name(model))


def test_every_gate_passes_alias_moves_json_and_junit(scope, register, client, tmp_path):
    model = unique("promo-pass")
    v1, v2 = register(model, 2)  # accuracy 0.90, 0.91
    res, body = promote(scope, model, "--version", v1, "--reason", "first")
    assert res.returncode == 0, res.stderr
    assert client.get_registered_model(model).aliases == {scope.alias: v1}

    published = publish(scope, model, v2)
    junit = tmp_path / "reports" / "gates.xml"
    res, body = promote(
        scope,
        model,
        "--version",
        v2,
        "--require",
        "accuracy>=0.9",
        "--no-regression",
        "accuracy",
        "--smoke",
        "--junit",
        str(junit),
        "--reason",
        "better model",
    )
    assert res.returncode == 0, res.stderr
    for key in ("promoted", "model", "version", "alias", "previous_version", "dry_run", "gates"):
        assert key in body
    assert body["promoted"] is True and body["dry_run"] is False
    assert (body["model"], body["version"], body["alias"], body["previous_version"]) == (
        model,
        v2,
        scope.alias,
        v1,
    )
    gates = gates_by_name(body)
    assert set(gates) == ALL_GATES
    assert {n: g["status"] for n, g in gates.items()} == dict.fromkeys(ALL_GATES, "passed")
    assert set(gates["version-ready"]) >= {"name", "passed", "message"}
    assert published.digest in gates["artifact-integrity"]["message"]
    assert "0.91 vs 0.9" in gates["no-regression accuracy"]["message"]
    assert client.get_registered_model(model).aliases == {scope.alias: v2}

    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == ALL_GATES
    assert suite.get("failures") == "0" and suite.get("tests") == str(len(ALL_GATES))
    assert not any(c.find("failure") is not None for c in cases.values())

    entries = json.loads(scope.run("history", model, "--output", "json").stdout)
    assert [(e["action"], e["from"], e["to"]) for e in entries] == [
        ("promote", None, v1),
        ("promote", v1, v2),
    ]
    assert entries[1]["reason"] == "better model" and entries[1]["gates"]["passed"] == 8
    assert entries[1]["actor"]


def test_failing_gates_block_and_report(scope, register, client, s3, tmp_path):
    model = unique("promo-fail")
    v1, v2 = register(model, 2)  # accuracy 0.90, 0.91
    client.set_registered_model_alias(model, scope.alias, v2)
    published = publish(scope, model, v1)
    # Tamper with the published copy: the integrity gate must notice.
    bucket, _, key = published.storage_uri[len("s3://") :].partition("/")
    s3.put_object(Bucket=bucket, Key=key + "MLmodel", Body=b"tampered")

    junit = tmp_path / "gates.xml"
    res, body = promote(
        scope,
        model,
        "--version",
        v1,
        "--require",
        "accuracy>=0.95",
        "--require",
        "accuracy<1",
        "--no-regression",
        "accuracy",
        "--junit",
        str(junit),
    )
    assert res.returncode == 1, res.stderr
    assert body["promoted"] is False and body["previous_version"] == v2
    gates = gates_by_name(body)
    assert not gates["require accuracy>=0.95"]["passed"]
    assert "accuracy = 0.9 " in gates["require accuracy>=0.95"]["message"]
    assert gates["require accuracy<1"]["passed"]
    assert not gates["no-regression accuracy"]["passed"]
    assert "regression" in gates["no-regression accuracy"]["message"]
    assert not gates["artifact-integrity"]["passed"]
    assert "MLmodel has 8 bytes, the marker says" in gates["artifact-integrity"]["message"]
    assert client.get_registered_model(model).aliases == {scope.alias: v2}

    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == set(gates)
    failure = cases["no-regression accuracy"].find("failure")
    assert failure is not None and "regression" in failure.get("message")
    assert cases["require accuracy<1"].find("failure") is None

    # A tolerance turns the regression into a pass (checked without changing anything).
    res, body = promote(
        scope,
        model,
        "--version",
        v1,
        "--dry-run",
        "--no-regression",
        "accuracy",
        "--tolerance",
        "2%",
    )
    assert gates_by_name(body)["no-regression accuracy"]["passed"], body
    # lower-is-better flips the direction: 0.90 < 0.91 is then an improvement.
    res, body = promote(
        scope,
        model,
        "--version",
        v1,
        "--dry-run",
        "--no-regression",
        "accuracy",
        "--lower-is-better",
        "accuracy",
    )
    assert gates_by_name(body)["no-regression accuracy"]["passed"], body


def test_signature_example_and_flavor_gates(scope, register, client, iris):
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = iris
    model = unique("promo-sig")
    estimator = LogisticRegression(max_iter=300).fit(X, y)
    mlflow.set_experiment("bridge-tests")
    with mlflow.start_run():  # no signature, no input example
        bare = mlflow.sklearn.log_model(
            estimator, name="model", registered_model_name=model, pip_requirements=["mlflow"]
        ).registered_model_version
    with mlflow.start_run():  # an input example that does not match the signature
        renamed = infer_signature(X.rename(columns=lambda c: "x_" + c.replace(" ", "_")), y)
        wrong = mlflow.sklearn.log_model(
            estimator,
            name="model",
            registered_model_name=model,
            input_example=X.head(3),
            signature=renamed,
            pip_requirements=["mlflow"],
        ).registered_model_version
    with mlflow.start_run() as run:  # not a pyfunc model at all
        mlflow.log_text("flavors:\n  custom_flavor: {}\n", "model/MLmodel")
        mlflow.log_text("weights", "model/weights.bin")
        raw = mlflow.register_model(f"runs:/{run.info.run_id}/model", model).version

    res, body = promote(scope, model, "--version", str(bare), "--dry-run")
    assert res.returncode == 1
    gates = gates_by_name(body)
    assert gates["signature"]["status"] == "failed" and gates["input-example"]["status"] == "failed"
    assert "no input example" in gates["input-example"]["message"]

    res, body = promote(scope, model, "--version", str(bare), "--dry-run", "--on-missing", "warn")
    assert res.returncode == 0, res.stderr
    gates = gates_by_name(body)
    assert gates["signature"]["status"] == "warned" and gates["signature"]["passed"]
    assert body["would_promote"] is True and body["promoted"] is False

    res, body = promote(scope, model, "--version", str(wrong), "--dry-run")
    assert res.returncode == 1
    gates = gates_by_name(body)
    assert gates["signature"]["passed"]
    assert not gates["input-example"]["passed"]
    assert "missing inputs" in gates["input-example"]["message"]

    res, body = promote(scope, model, "--version", str(raw), "--dry-run")
    assert res.returncode == 1
    gates = gates_by_name(body)
    assert not gates["pyfunc-flavor"]["passed"]
    assert "custom_flavor" in gates["pyfunc-flavor"]["message"]
    assert client.get_registered_model(model).aliases == {}


def test_smoke_gate_fails_on_a_broken_and_on_a_hanging_model(scope, client, iris, tmp_path):
    model = unique("promo-smoke")
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    version = log_blocking_model(model, gate_dir, iris[0])

    (gate_dir / "fail").touch()
    res, body = promote(scope, model, "--version", version, "--smoke", "--dry-run")
    assert res.returncode == 1, res.stderr
    smoke = gates_by_name(body)["smoke"]
    assert not smoke["passed"] and "broken on purpose" in smoke["message"]
    assert gates_by_name(body)["input-example"]["passed"]  # the schema is fine, predict is not

    (gate_dir / "fail").unlink()
    (gate_dir / "armed").touch()  # predict now waits for a release that never comes
    res, body = promote(
        scope, model, "--version", version, "--smoke", "--smoke-timeout", "5", "--dry-run"
    )
    assert res.returncode == 1, res.stderr
    smoke = gates_by_name(body)["smoke"]
    assert not smoke["passed"] and "no prediction within 5s" in smoke["message"]
    assert client.get_registered_model(model).aliases == {}


def test_dry_run_changes_nothing(scope, register, client):
    model = unique("promo-dry")
    v1, v2 = register(model, 2)
    client.set_registered_model_alias(model, scope.alias, v1)
    before = snapshot(client, model)
    res, body = promote(scope, model, "--version", v2, "--dry-run", "--no-regression", "accuracy")
    assert res.returncode == 0, res.stderr
    assert body["dry_run"] is True and body["promoted"] is False and body["would_promote"] is True
    res, body = promote(scope, model, "--version", v2, "--dry-run", "--canary", "20")
    assert res.returncode == 0, res.stderr
    assert snapshot(client, model) == before


def test_history_grows_and_rollback_uses_it(scope, register, client):
    model = unique("promo-hist")
    v1, v2, v3 = register(model, 3)
    for v in (v1, v2, v3):
        res, _ = promote(scope, model, "--version", v)
        assert res.returncode == 0, res.stderr
    env = {**FAST, "GITHUB_ACTOR": "octocat", "GITHUB_REPOSITORY": "org/repo", "GITHUB_RUN_ID": "7"}

    res = scope.run("rollback", model, "--reason", "v3 is slow", env=env)
    assert res.returncode == 0, res.stderr
    assert client.get_registered_model(model).aliases[scope.alias] == v2
    res = scope.run("rollback", model, "--output", "json", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["version"] == v1  # v3 was rolled away from: not a target
    assert client.get_registered_model(model).aliases[scope.alias] == v1

    res = scope.run("rollback", model, env=FAST)
    assert res.returncode == 2 and "--to N" in res.stderr
    res = scope.run("rollback", model, "--to", v3, env=FAST)
    assert res.returncode == 0, res.stderr
    assert client.get_registered_model(model).aliases[scope.alias] == v3

    entries = json.loads(scope.run("history", model, "--output", "json").stdout)
    assert [(e["action"], e["from"], e["to"]) for e in entries] == [
        ("promote", None, v1),
        ("promote", v1, v2),
        ("promote", v2, v3),
        ("rollback", v3, v2),
        ("rollback", v2, v1),
        ("rollback", v1, v3),
    ]
    assert entries[3]["actor"] == "octocat" and entries[3]["reason"] == "v3 is slow"
    assert entries[3]["ci_url"] == "https://github.com/org/repo/actions/runs/7"
    table = scope.run("history", model)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["WHEN", "ACTION", "ALIAS", "FROM", "TO"]
    assert len(lines) == 7 and "v3 is slow" in lines[4]


def test_canary_then_complete_the_rollout(scope, register, client):
    model = unique("promo-canary")
    canary = scope.alias + "-canary"
    v1, v2 = register(model, 2)
    assert promote(scope, model, "--version", v1)[0].returncode == 0
    # The history is bounded (oldest dropped): with a limit of 2 the first entry goes.
    env = {"BRIDGE_PROMOTE_HISTORY_LIMIT": "2"}

    res, body = promote(
        scope, model, "--version", v2, "--canary", "10", "--no-regression", "accuracy"
    )
    assert res.returncode == 0, res.stderr
    assert body["alias"] == canary and body["canary_percent"] == 10
    rm = client.get_registered_model(model)
    assert rm.aliases == {scope.alias: v1, canary: v2}
    assert rm.tags["bridge.canary-traffic-percent"] == "10"

    # Rolling back the canary alias aborts the canary ...
    res = scope.run("rollback", model, "--alias", canary, "--output", "json", env=FAST)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["canary_aborted"] is True
    rm = client.get_registered_model(model)
    assert rm.aliases == {scope.alias: v1} and "bridge.canary-traffic-percent" not in rm.tags
    # ... and a new canary can start again.
    res, body = promote(scope, model, "--version", v2, "--canary", "10", env=env)
    assert res.returncode == 0, res.stderr

    res, body = promote(scope, model, "--from-alias", canary, env=env)
    assert res.returncode == 0, res.stderr
    assert body["completed_canary"] is True and body["version"] == v2
    rm = client.get_registered_model(model)
    assert rm.aliases == {scope.alias: v2}
    assert "bridge.canary-traffic-percent" not in rm.tags
    entries = json.loads(scope.run("history", model, "--output", "json").stdout)
    assert [(e["action"], e["alias"], e["to"]) for e in entries] == [
        ("canary", canary, v2),
        ("canary-complete", scope.alias, v2),
    ]


def test_bad_inputs_exit_2_with_one_clear_line(scope, register, capsys):
    """Through bridge.cli.main in this process: the same code path, without 12 interpreter starts."""
    from bridge.cli import main

    model = unique("promo-bad")
    [v1] = register(model, 1)
    cases = [
        (("promote", unique("no-such-model"), "--version", "1"), "no-such-model"),
        (("promote", model, "--version", "99"), "has no version 99"),
        (("promote", model, "--version", v1, "--require", "accuracy=>0.9"), "malformed --require"),
        (
            ("promote", model, "--version", v1, "--require", "acc>=0.9"),
            "metric 'acc' is not logged",
        ),
        (("promote", model, "--version", v1, "--no-regression", "f1"), "metric 'f1' is not logged"),
        (("promote", model), "exactly one of --version N or --from-alias"),
        (("promote", model, "--version", v1, "--from-alias", "x"), "exactly one of"),
        (("promote", model, "--from-alias", "nobody"), "has no alias 'nobody'"),
        (("promote", model, "--version", v1, "--tolerance", "-1"), "invalid --tolerance"),
        (("promote", model, "--version", v1, "--canary", "150"), "out of range"),
        (("rollback", model, "--to", "42"), "has no version 42"),
    ]
    capsys.readouterr()
    for args, expected in cases:
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (args, exit_.value.code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert expected in lines[0], (args, lines[0])
    res = scope.run("promote", model, "--version", "99", "--output", "json", env=FAST)
    body = json.loads(res.stdout)
    assert res.returncode == 2 and body["promoted"] is False and body["error"]["kind"] == "usage"
    assert res.stderr.strip().startswith("error: ") and "Traceback" not in res.stderr


def _popen(scope, *args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", *args],
        env={**os.environ, **scope.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_promotion_is_detected_two_processes(scope, register, client, iris, tmp_path):
    """A holds between check and set (its smoke test waits); B promotes meanwhile; A must fail."""
    model = unique("promo-race")
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    [v1] = register(model, 1)
    v_slow = log_blocking_model(model, gate_dir, iris[0])
    [v_fast] = register(model, 1)
    client.set_registered_model_alias(model, scope.alias, v1)

    (gate_dir / "armed").touch()
    slow = _popen(scope, "promote", model, "--version", v_slow, "--smoke", "--output", "json")
    try:
        deadline = time.monotonic() + 240
        while not (gate_dir / "started").exists():
            assert slow.poll() is None, slow.communicate()
            assert time.monotonic() < deadline, "the slow promotion never reached its smoke gate"
            time.sleep(0.1)
        fast = scope.run("promote", model, "--version", v_fast)
        assert fast.returncode == 0, fast.stderr
    finally:
        (gate_dir / "release").touch()
        out, err = slow.communicate(timeout=300)
    assert slow.returncode == 1, err
    assert f"moved from version {v1} to {v_fast} while the gates ran" in err
    body = json.loads(out)
    assert body["promoted"] is False and body["error"]["kind"] == "check"
    assert gates_by_name(body)["smoke"]["passed"]  # the gate report survives the failed move
    assert client.get_registered_model(model).aliases[scope.alias] == v_fast
    entries = json.loads(scope.run("history", model, "--output", "json").stdout)
    assert [(e["from"], e["to"]) for e in entries] == [(v1, v_fast)]
    assert "bridge.lock" not in client.get_registered_model(model).tags


def test_simultaneous_promotions_never_overwrite_silently(scope, register, client):
    """Three processes at once: every success must have seen the alias where the one before left it."""
    model = unique("promo-many")
    versions = register(model, 3)
    # The settle delay must exceed the worst write latency (docs/promote.md); this
    # machine may be busy, so give it a margin rather than the 1 s default.
    env = {"BRIDGE_PROMOTE_LOCK_SETTLE": "3"}
    procs = [
        _popen(scope, "promote", model, "--version", v, "--output", "json", env=env)
        for v in versions
    ]
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    codes = [p.returncode for p, _, _ in results]
    assert set(codes) <= {0, 1}, [err for _, _, err in results]
    assert 0 in codes
    for p, _, err in results:
        if p.returncode == 1:
            assert "being promoted by" in err or "while the gates ran" in err, err
    winners = [v for v, (p, _, _) in zip(versions, results, strict=True) if p.returncode == 0]
    entries = json.loads(scope.run("history", model, "--output", "json").stdout)
    assert sorted(e["to"] for e in entries) == sorted(winners)
    chain = [e["from"] for e in entries] + [entries[-1]["to"]]
    assert chain[0] is None
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["from"] == before["to"], entries
    assert client.get_registered_model(model).aliases[scope.alias] == entries[-1]["to"]


def test_a_live_lock_blocks_and_an_expired_one_does_not(scope, register, client):
    model = unique("promo-lock")
    [v1] = register(model, 1)
    lock = {
        "token": "someone-else",
        "owner": "ci@runner:1",
        "at": "now",
        "expires": time.time() + 100,  # within the default TTL of 120 s
    }
    client.set_registered_model_tag(model, "bridge.lock", json.dumps(lock))
    res, body = promote(scope, model, "--version", v1)
    assert res.returncode == 1 and "being promoted by ci@runner:1" in res.stderr
    assert client.get_registered_model(model).aliases == {}

    lock["expires"] = time.time() - 1
    client.set_registered_model_tag(model, "bridge.lock", json.dumps(lock))
    res, body = promote(scope, model, "--version", v1)
    assert res.returncode == 0, res.stderr
    rm = client.get_registered_model(model)
    assert rm.aliases == {scope.alias: v1} and "bridge.lock" not in rm.tags
