"""KFP components: golden compiled YAML, interfaces, image, and the pure helpers."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge import __version__
from bridge.errors import CheckFailed, PermanentError, TemporaryError, UsageError
from bridge.kfp_ops import (
    component_image,
    parse_model_ref,
    parse_promote_result,
    promote_command,
)
from bridge.kfp_run import KfpLineage, lineage_inputs
from components.compile import ROOT, TARGETS, compile_one

COMPONENTS = [t for t in TARGETS if t[0].startswith("components.")]


@pytest.mark.parametrize("module,attr,rel", TARGETS, ids=[t[2] for t in TARGETS])
def test_compiling_reproduces_the_checked_in_yaml(module, attr, rel, tmp_path):
    fresh = tmp_path / "fresh.yaml"
    compile_one(module, attr, fresh)
    checked_in = ROOT / rel
    assert checked_in.exists(), f"{rel} is missing; run: make components"
    assert fresh.read_bytes() == checked_in.read_bytes(), f"{rel} is stale; run: make components"


def test_compilation_is_deterministic_across_processes(tmp_path):
    """Two fresh interpreters (different hash seeds) write identical bytes."""
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"p{seed}.yaml"
        code = (
            "from components.compile import compile_one;"
            f"compile_one('examples.kfp_pipeline', 'pipeline', {str(out)!r})"
        )
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def _spec(rel: str) -> dict:
    """The pipeline spec (a pipeline file also holds a second document: platform config)."""
    docs = list(yaml.safe_load_all((ROOT / rel).read_text()))
    spec = docs[0]
    if len(docs) > 1:
        spec["platforms"] = docs[1]["platforms"]
    return spec


@pytest.mark.parametrize("module,attr,rel", COMPONENTS, ids=[t[1] for t in COMPONENTS])
def test_component_interface_is_typed_documented_and_bounded(module, attr, rel):
    spec = _spec(rel)
    [(comp_key, comp)] = spec["components"].items()
    assert comp_key == "comp-" + attr.replace("_", "-")
    from kfp import components

    loaded = components.load_component_from_file(str(ROOT / rel))
    assert len(loaded.description) > 200, "the docstring is what the KFP UI shows"
    params = comp["inputDefinitions"]["parameters"]
    # every input is typed and described; every long-running component has a deadline
    for name, p in params.items():
        assert p["parameterType"] in {
            "STRING",
            "NUMBER_INTEGER",
            "NUMBER_DOUBLE",
            "BOOLEAN",
            "LIST",
        }
        assert p.get("description"), f"{attr}: input {name} has no description"
    assert params["timeout_seconds"]["parameterType"] == "NUMBER_INTEGER"
    outputs = comp["outputDefinitions"]
    for name, p in outputs.get("parameters", {}).items():
        assert p.get("description"), f"{attr}: output {name} has no description"
    [executor] = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == component_image()


def test_component_outputs_match_the_contract():
    def outs(rel):
        spec = _spec(rel)
        [comp] = spec["components"].values()
        o = comp["outputDefinitions"]
        return set(o.get("parameters", {})) | set(o.get("artifacts", {}))

    assert outs("components/train_and_log/component.yaml") == {
        "run_id",
        "model_uri",
        "accuracy",
        "metrics",
    }
    assert outs("components/register_model/component.yaml") == {"version", "model_uri"}
    assert outs("components/fetch_model/component.yaml") == {"model", "version", "model_uri"}
    assert outs("components/promote_model/component.yaml") == {
        "promoted",
        "version",
        "alias",
        "report",
    }
    assert outs("components/deploy_model/component.yaml") == {"manifest", "isvc_name", "applied"}
    [fetch] = _spec("components/fetch_model/component.yaml")["components"].values()
    assert fetch["outputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == (
        "system.Model"
    )


def test_image_tag_is_the_package_version_never_latest():
    assert component_image() == f"ghcr.io/mlflow-kubeflow-bridge/bridge-kfp:{__version__}"
    with pytest.raises(UsageError):
        component_image("latest")
    for rel in [t[2] for t in TARGETS]:
        assert ":latest" not in (ROOT / rel).read_text()


def test_components_are_thin():
    """The component bodies call bridge.kfp_ops; the logic lives in the library."""
    for module, attr, _ in COMPONENTS:
        source = Path(importlib.import_module(module).__file__).read_text()
        assert "from bridge import kfp_ops" in source
        body = source.split('"""\n', 3)[-1]  # after the docstring of the function
        assert len(body.splitlines()) < 25, f"{attr} has too much code; move it to bridge/"


def test_example_pipeline_wires_mlflow_secret_and_lineage_placeholders():
    spec = _spec("examples/kfp_pipeline.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {
        "train-and-log",
        "register-model",
        "promote-model",
        "fetch-model",
        "deploy-model",
    }
    params = tasks["train-and-log"]["inputs"]["parameters"]
    assert params["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert params["kfp_task_name"]["runtimeValue"]["constant"] == "{{$.pipeline_task_name}}"
    k8s = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == {f"exec-{t}" for t in tasks}
    for name, cfg in k8s.items():
        secrets = {s["secretName"]: s for s in cfg["secretAsEnv"]}
        assert "mlflow-credentials" in secrets, name
        envs = {e["envVar"] for s in cfg["secretAsEnv"] for e in s["keyToEnv"]}
        assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"} <= envs
    assert "bridge-s3" in {s["secretName"] for s in k8s["exec-deploy-model"]["secretAsEnv"]}
    # no value of any secret is compiled in
    text = (ROOT / "examples/kfp_pipeline.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY:" not in text and "http://" not in text


def test_lineage_placeholders_are_kfps_own():
    from kfp import dsl

    assert lineage_inputs("p") == {
        "kfp_pipeline_name": "p",
        "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        "kfp_run_name": dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        "kfp_task_name": dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
    }


def test_lineage_prefers_inputs_then_env_and_ignores_unresolved_placeholders():
    env = {
        "KFP_RUN_ID": "env-run",
        "KFP_TASK_NAME": "env-task",
        "KFP_POD_NAME": "pod-1",
        "KFP_PIPELINE_NAME": "env-pipe",
    }
    lineage = KfpLineage.resolve(
        pipeline_name="",
        run_id="{{$.pipeline_job_uuid}}",
        run_name="run-7",
        task_name="train",
        component="train-and-log",
        env=env,
    )
    assert lineage.tags() == {
        "kfp.pipeline_name": "env-pipe",
        "kfp.run_id": "env-run",
        "kfp.run_name": "run-7",
        "kfp.task_name": "train",
        "kfp.pod_name": "pod-1",
        "kfp.component": "train-and-log",
        "kfp.component_version": __version__,
    }
    assert KfpLineage.resolve(env={}).tags() == {"kfp.component_version": __version__}


@pytest.mark.parametrize(
    "args,expected",
    [
        (("churn@champion",), ("churn", "champion", "")),
        (("churn", "", "3"), ("churn", "", "3")),
        (("churn", "challenger"), ("churn", "challenger", "")),
        (("churn@champion", "champion"), ("churn", "champion", "")),
    ],
)
def test_model_ref_parsing(args, expected):
    assert parse_model_ref(*args) == expected


@pytest.mark.parametrize(
    "args",
    [("churn",), ("churn@champion", "", "3"), ("churn", "a", "3"), ("@x",), ("churn", "", "v3")],
)
def test_model_ref_rejects_ambiguous_or_bad_input(args):
    with pytest.raises(UsageError):
        parse_model_ref(*args)


def test_promote_command_follows_the_cli_contract():
    cmd = promote_command(
        "churn",
        version="4",
        alias="champion",
        require=["accuracy>=0.9", "f1_macro>=0.8"],
        no_regression=["accuracy"],
        dry_run=True,
    )
    assert cmd[:4] == [sys.executable, "-m", "bridge", "promote"]
    assert cmd[4:] == [
        "churn",
        "--version",
        "4",
        "--alias",
        "champion",
        "--require",
        "accuracy>=0.9",
        "--require",
        "f1_macro>=0.8",
        "--no-regression",
        "accuracy",
        "--dry-run",
        "--output",
        "json",
    ]
    assert promote_command("churn", from_alias="challenger")[4:7] == [
        "churn",
        "--from-alias",
        "challenger",
    ]
    for bad in ({}, {"version": "1", "from_alias": "challenger"}):
        with pytest.raises(UsageError):
            promote_command("churn", **bad)


def _report(promoted, gates, version="4", alias="champion"):
    return json.dumps({"promoted": promoted, "version": version, "alias": alias, "gates": gates})


def test_promote_exit_0_is_the_result():
    out = _report(True, [{"name": "require accuracy>=0.9", "passed": True, "message": "0.95"}])
    result = parse_promote_result(0, out, "")
    assert (result.promoted, result.version, result.alias) == (True, "4", "champion")
    assert json.loads(result.report)["gates"][0]["passed"] is True
    dry = parse_promote_result(0, _report(False, []), "")
    assert dry.promoted is False


def test_promote_exit_1_fails_with_the_gate_reasons():
    out = _report(
        False,
        [
            {"name": "require accuracy>=0.9", "passed": False, "message": "accuracy 0.71 < 0.9"},
            {"name": "no-regression f1", "passed": True, "message": "ok"},
            {"name": "no-regression auc", "passed": False, "message": "0.80 < champion 0.85"},
        ],
    )
    with pytest.raises(CheckFailed) as err:
        parse_promote_result(1, out, "error: gate said no")
    message = str(err.value)
    assert "version 4 to @champion refused" in message
    assert "require accuracy>=0.9: accuracy 0.71 < 0.9" in message
    assert "no-regression auc: 0.80 < champion 0.85" in message
    assert "no-regression f1" not in message
    assert err.value.exit_code == 1


def test_promote_other_exit_codes_map_to_bridge_errors():
    with pytest.raises(UsageError, match="no `bridge promote`"):
        parse_promote_result(2, "", "Error: No such command 'promote'.")
    with pytest.raises(UsageError, match="unknown metric"):
        parse_promote_result(2, "", "error: unknown metric 'acc'")
    with pytest.raises(TemporaryError, match="cannot reach MLflow"):
        parse_promote_result(3, "", "error: cannot reach MLflow at http://mlflow:5000")
    with pytest.raises(PermanentError, match="exited with 137"):
        parse_promote_result(137, "", "Killed")
    with pytest.raises(PermanentError, match="no JSON"):
        parse_promote_result(0, "promoted!", "")


def test_bridge_cli_does_not_import_kfp_or_mlflow():
    code = "import sys, bridge.cli; print(sorted(m for m in ('kfp','mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
