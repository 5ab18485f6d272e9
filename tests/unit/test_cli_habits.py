"""The command line as kubectl users expect it (DESIGN.md, "Contract"): -o json|yaml on every
command that prints data, -n/--namespace, --context, --kubeconfig and
--dry-run=server|client|none where the cluster is reached, `bridge config` naming the source
of every value, and command modules that load on their own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

import bridge
from bridge.cli import cli

CLI_MODULES = sorted(p.stem for p in Path(bridge.__file__).parent.glob("cli_*.py"))
# Commands that print data (the rest print help or run a server).
DATA_COMMANDS = [
    ("sync",),
    ("render",),
    ("status",),
    ("promote",),
    ("rollback",),
    ("history",),
    ("rollout",),
    ("credentials",),
    ("config",),
    ("dev", "up"),
    ("dev", "env"),
]
CLUSTER_COMMANDS = [("sync",), ("status",), ("rollout",), ("serve",)]
APPLYING_COMMANDS = [("sync",), ("rollout",)]


def _options(path) -> dict[str, click.Option]:
    cmd = cli
    for name in path:
        cmd = cmd.commands[name]
    return {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}


@pytest.mark.parametrize("module", CLI_MODULES)
def test_each_command_module_loads_alone_without_bridge_cli(module):
    """No import cycle: a command module needs bridge.cli_common, never bridge.cli."""
    code = f"import sys, bridge.{module}; assert 'bridge.cli' not in sys.modules, sys.modules"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("path", DATA_COMMANDS, ids=" ".join)
def test_every_data_command_takes_o_json_and_yaml(path):
    opts = _options(path)
    assert "-o" in opts and "--output" in opts, path
    assert {"json", "yaml"} <= set(opts["-o"].type.choices), opts["-o"].type.choices


@pytest.mark.parametrize("path", CLUSTER_COMMANDS, ids=" ".join)
def test_cluster_commands_take_namespace_context_kubeconfig(path):
    opts = _options(path)
    for flag in ("-n", "--namespace", "--context", "--kubeconfig"):
        assert flag in opts, (path, flag)


@pytest.mark.parametrize("path", APPLYING_COMMANDS, ids=" ".join)
def test_applying_commands_take_kubectls_dry_run(path):
    opts = _options(path)
    assert set(opts["--dry-run"].type.choices) == {"server", "client", "none"}


def test_config_names_the_source_of_every_value(tmp_path, monkeypatch):
    for var in (
        "BRIDGE_ALIAS",
        "BRIDGE_NAMESPACE",
        "BRIDGE_CONFIG",
        "BRIDGE_DRY_RUN",
        "BRIDGE_APPLY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BRIDGE_ALIAS", "prod")
    config = tmp_path / "bridge.toml"
    config.write_text('namespace = "models"\napply = true\ndry_run = "client"\n')
    res = CliRunner().invoke(
        cli, ["--config", str(config), "--log-level", "WARNING", "config", "-o", "json"]
    )
    assert res.exit_code == 0, res.output
    values = json.loads(res.output)
    assert values["alias"] == {"value": "prod", "source": "env BRIDGE_ALIAS"}
    assert values["namespace"] == {"value": "models", "source": f"file {config}"}
    assert values["dry_run"] == {"value": "client", "source": f"file {config}"}
    assert values["log_level"] == {"value": "WARNING", "source": "--log-level"}
    assert values["canary_alias"] == {"value": "challenger", "source": "default"}
    as_yaml = CliRunner().invoke(cli, ["--config", str(config), "config", "-o", "yaml"])
    assert yaml.safe_load(as_yaml.output)["alias"]["source"] == "env BRIDGE_ALIAS"


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("server", "server"),
        ("client", "client"),
        ("none", "none"),
        ("true", "server"),
        ("false", "none"),
    ],
)
def test_dry_run_setting_reads_kubectls_words_and_the_old_booleans(monkeypatch, value, mode):
    from bridge.settings import load_settings

    settings = load_settings({}, env={"BRIDGE_DRY_RUN": value, "BRIDGE_APPLY": "true"})
    assert settings.dry_run == mode


def test_unknown_dry_run_is_a_usage_error():
    res = CliRunner().invoke(cli, ["sync", "--once", "--apply", "--dry-run=maybe"])
    assert res.exit_code == 2
    assert "server" in res.output and "client" in res.output


def _bridge(*args: str, **env: str) -> subprocess.CompletedProcess:
    import os

    # MLflow's own MLFLOW_HTTP_* variables win over bridge's settings; an earlier test in
    # this process may have set them (bridge.registry.configure_mlflow_client).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_retry_chatter_stays_out_of_stderr_unless_debug():
    """urllib3 warns at each retry ("Retrying (Retry(total=1 ...)) after connection broken");
    bridge says once what failed. MLflow at a refused port (nothing listens on port 9)."""
    env = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "BRIDGE_MLFLOW_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    }
    quiet = _bridge("history", "some-model", **env)
    assert quiet.returncode == 3, quiet.stderr
    assert quiet.stderr.splitlines() == [
        "error: model 'some-model': cannot reach MLflow at http://127.0.0.1:9 (is the server "
        "up and MLFLOW_TRACKING_URI right? retried 2 times)"
    ]
    loud = _bridge("--debug", "history", "some-model", **env)
    assert loud.returncode == 3 and "Retrying (Retry(" in loud.stderr


def test_a_bad_mlflow_variable_is_a_usage_error_not_a_bug():
    res = _bridge(
        "history",
        "m",
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0.1",
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: Failed to convert '0.1' for MLFLOW_HTTP_REQUEST_BACKOFF")
    assert "internal error" not in res.stderr and len(res.stderr.splitlines()) == 1
