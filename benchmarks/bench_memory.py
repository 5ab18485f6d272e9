"""Idle memory of the daemon: `bridge serve` after its first pass, doing nothing.

Runs the daemon under BRIDGE_BENCH_RUNTIME_PYTHON (`make bench`: the daemon image's
`.[daemon]` environment) against a private local stack with one approved model,
as a pod runs it: leader election on, through a Lease on the local HTTP fake of
the Kubernetes API (tests/fake_k8s_api.py; the real API cannot run here), and,
for comparison, with leader election off. RSS is read from /proc after the first
pass has finished and the daemon has idled for IDLE_S seconds. Target: <= 100 MB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

IDLE_S = 5.0
TARGET_MB = 100.0


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return False
    # the first pass has recorded its duration
    return any(
        line.startswith("bridge_sync_duration_seconds_count") and float(line.split()[-1]) >= 1
        for line in text.splitlines()
    )


def _idle_rss(python: str, env: dict[str, str], tmp: Path) -> float:
    from bridge import devstack

    port = devstack.free_port()
    log = open(tmp / f"daemon-{port}.log", "wb")
    proc = subprocess.Popen(
        [python, "-m", "bridge", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not _ready(f"http://127.0.0.1:{port}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / f"daemon-{port}.log").read_text()[-2000:])
            time.sleep(0.2)
        time.sleep(IDLE_S)
        return round(_rss_mb(proc.pid), 1)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run() -> list[dict]:
    from mlflow import MlflowClient

    from bridge import devstack
    from tests.fake_k8s_api import FakeKubeAPI
    from tests.integration.transfer_support import create_version, model_files, s3_client

    python = os.environ.get("BRIDGE_BENCH_RUNTIME_PYTHON") or sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    stack, _ = devstack.up(tmp / "stack")
    api = FakeKubeAPI().start()
    try:
        client = MlflowClient(stack.mlflow_url)
        s3 = s3_client(stack.s3_url)
        alias = f"bench-mem-{uuid.uuid4().hex[:6]}"
        name = f"bench-mem-{uuid.uuid4().hex[:6]}"
        v = create_version(client, s3, name, model_files(big=1024 * 1024, small=3, seed=1))
        client.set_registered_model_alias(name, alias, v)
        base = {
            **stack.env(),
            "BRIDGE_ALIAS": alias,
            "BRIDGE_TARGET_URI": f"s3://{devstack.TARGET_BUCKET}/mem-{uuid.uuid4().hex[:6]}",
            "BRIDGE_OUTPUT_DIR": str(tmp / "out"),
            "BRIDGE_POLL_INTERVAL": "600",
        }
        leader = _idle_rss(
            python,
            {
                **base,
                "BRIDGE_LEADER_ELECTION": "true",
                "BRIDGE_LEASE_NAMESPACE": "bench",
                "KUBECONFIG": str(api.write_kubeconfig(tmp / "kubeconfig")),
            },
            tmp,
        )
        alone = _idle_rss(python, {**base, "BRIDGE_LEADER_ELECTION": "false"}, tmp)
    finally:
        api.stop()
        devstack.down(tmp / "stack")
    return [
        {
            "name": "daemon idle RSS (leader election on, as in a pod)",
            "value": leader,
            "unit": "MB",
            "target": f"<= {TARGET_MB:.0f} MB",
            "met": leader <= TARGET_MB,
            "leader_election_off_mb": alone,
            "python": python,
        }
    ]
