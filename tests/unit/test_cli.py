import click
import pytest
from click.testing import CliRunner

from bridge.cli import cli, main


def _commands(group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path):
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"`bridge {' '.join(path)} --help` shows no example"


def test_contract_commands_are_listed():
    res = CliRunner().invoke(cli, ["--help"])
    for name in ("sync", "render", "dev"):
        assert name in res.output


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sync", "--no-such-flag"])
    assert exc.value.code == 2


def test_missing_setting_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["sync", "--once"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.strip() == "error: tracking-uri is not set (set MLFLOW_TRACKING_URI or pass --tracking-uri)"
