"""Images you can build: the Dockerfile's two targets through `make images`, and the image
the compiled KFP components name, set by `make components COMPONENTS_IMAGE=...`.

No container engine runs here (docker's client is installed, its daemon is not), so the
engine is a stand-in script on PATH that records what make asked of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)


def _engines(tmp_path: Path, docker_works: bool) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "engine.log"
    for name, works in (("docker", docker_works), ("podman", False)):
        script = bin_dir / name
        script.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = info ]; then exit {0 if works else 1}; fi\n'
            f'echo "{name} $*" >> {log}\n'
        )
        script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


def _make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    make = shutil.which("make")
    return subprocess.run(
        [make, "-s", "-C", str(ROOT), "images", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_images_says_so_where_no_engine_runs(tmp_path):
    res = _make(_engines(tmp_path, docker_works=False))
    assert res.returncode != 0
    assert "make images: no container engine here" in res.stderr
    assert not (tmp_path / "engine.log").exists()


def test_make_images_builds_both_targets_with_the_engine_that_answers(tmp_path):
    res = _make(_engines(tmp_path, docker_works=True), "COMPONENTS_IMAGE=registry.example/kfp:7.1")
    assert res.returncode == 0, res.stderr
    builds = (tmp_path / "engine.log").read_text().splitlines()
    assert builds == [
        f"docker build --target daemon -t ghcr.io/mlflow-kubeflow-bridge/bridge:{VERSION} .",
        "docker build --target components -t registry.example/kfp:7.1 .",
    ]


def _compile(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BRIDGE_COMPONENTS_IMAGE"}
    return subprocess.run(
        [sys.executable, "-m", "components.compile", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_compiled_yaml_names_the_image_make_components_was_given(tmp_path):
    image = "registry.example/team/bridge-kfp:0.1.0-rc1"
    res = _compile("--image", image, "--out-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    written = sorted(tmp_path.rglob("*.yaml"))
    assert len(written) == 6, written
    for path in written:
        images = {
            line.split("image:", 1)[1].strip()
            for line in path.read_text().splitlines()
            if line.strip().startswith("image:")
        }
        assert images == {image}, (path, images)


@pytest.mark.parametrize("image", ["registry.example/bridge-kfp:latest", "registry.example/kfp"])
def test_an_unpinned_component_image_is_refused(tmp_path, image):
    res = _compile("--image", image, "--out-dir", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: component image {image!r} is not pinned")
    assert not list(tmp_path.rglob("*.yaml"))
