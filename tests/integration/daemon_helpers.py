"""Run `bridge serve` as a real subprocess and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from bridge import devstack, webhook


@dataclass
class DaemonProc:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_daemon(
    env: dict[str, str], log_dir: Path, *args: str, advertise: bool = False
) -> DaemonProc:
    port = devstack.free_port()
    if advertise:  # the URL other replicas forward webhooks to while this one leads
        env = {**env, "BRIDGE_ADVERTISE_URL": f"http://127.0.0.1:{port}"}
    log_path = log_dir / f"daemon-{port}.log"
    with open(log_path, "ab") as logfile:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            env={**os.environ, **env},
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    d = DaemonProc(proc, port, log_path)
    wait_until(lambda: _up(d), 60, f"daemon on port {port} did not start", d)
    return d


def _up(d: DaemonProc) -> bool:
    if d.proc.poll() is not None:
        raise AssertionError(f"daemon exited with {d.proc.returncode}:\n{d.log()}")
    try:
        return d.get("/healthz")[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until(cond, timeout: float, message: str, daemon: DaemonProc | None = None, step=0.1):
    """Wait for a condition (a deadline against hangs, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(message + (f"\n--- daemon log ---\n{daemon.log()}" if daemon else ""))


def signed(secret: str, payload: dict, *, ts: int | None = None, delivery_id: str | None = None):
    """(body, headers) exactly as MLflow sends a delivery."""
    body = json.dumps(payload).encode()
    ts_s = str(int(time.time()) if ts is None else ts)
    did = delivery_id or str(uuid.uuid4())
    return body, {
        "Content-Type": "application/json",
        webhook.DELIVERY_ID_HEADER: did,
        webhook.TIMESTAMP_HEADER: ts_s,
        webhook.SIGNATURE_HEADER: webhook.sign(secret, did, ts_s, body),
    }


def alias_event(model: str, alias: str, version: str) -> dict:
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "data": {"name": model, "alias": alias, "version": version},
    }


def webhook_stack(state_dir: Path):
    """A private dev stack (generator: yields it, then stops it) whose MLflow re-reads its
    webhook list every second (MLFLOW_WEBHOOK_CACHE_TTL, default 60 s), so that a webhook
    a test registers is called at once."""
    os.environ["MLFLOW_WEBHOOK_CACHE_TTL"] = "1"
    try:
        stack, _ = devstack.up(state_dir)
    finally:
        del os.environ["MLFLOW_WEBHOOK_CACHE_TTL"]
    yield stack
    devstack.down(state_dir)
