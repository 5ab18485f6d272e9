"""`bridge dev`: a real local stack for trying bridge and for its tests.

It runs a real MLflow tracking server (sqlite backend, artifacts proxied to
S3) and a real S3-compatible HTTP server (moto_server; MinIO in production),
on free loopback ports, with all state in one directory. The processes are
detached so the stack outlives the `bridge dev up` command; `down` stops
exactly the processes recorded in the state file.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import PermanentError, TemporaryError, UsageError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
ARTIFACT_BUCKET = "mlflow-artifacts"
TARGET_BUCKET = "bridge-models"
# Fake, local-only credentials: moto accepts any key pair.
DEV_ACCESS_KEY = "bridge-dev-access-key"
DEV_SECRET_KEY = "bridge-dev-secret-key"
DEV_REGION = "us-east-1"


def default_state_dir() -> Path:
    return Path(os.environ.get("BRIDGE_DEV_DIR", ".bridge-dev")).resolve()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    """A console script of the same environment as this interpreter."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise UsageError(
            f"{name} is not installed",
            hint="install the dev extras: pip install 'mlflow-kubeflow-bridge[dev]'",
        )
    return found


@dataclass
class Stack:
    state_dir: Path
    s3_port: int
    mlflow_port: int
    s3_pid: int
    mlflow_pid: int

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """The environment a client uses to talk to this stack."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
            "AWS_DEFAULT_REGION": DEV_REGION,
            "AWS_ENDPOINT_URL": self.s3_url,
            "BRIDGE_TARGET_URI": f"s3://{TARGET_BUCKET}/serving",
            "BRIDGE_TARGET_ENDPOINT_URL": self.s3_url,
            # Read MLflow's proxied artifacts straight from S3 (server-side copy).
            "BRIDGE_SOURCE_ARTIFACTS_URI": f"s3://{ARTIFACT_BUCKET}/",
            "BRIDGE_SOURCE_ENDPOINT_URL": self.s3_url,
        }

    def to_json(self) -> dict:
        return {
            "s3": {"pid": self.s3_pid, "port": self.s3_port, "url": self.s3_url},
            "mlflow": {"pid": self.mlflow_pid, "port": self.mlflow_port, "url": self.mlflow_url},
            "env": self.env(),
        }

    @classmethod
    def from_json(cls, state_dir: Path, data: dict) -> Stack:
        return cls(
            state_dir=state_dir,
            s3_port=data["s3"]["port"],
            mlflow_port=data["mlflow"]["port"],
            s3_pid=data["s3"]["pid"],
            mlflow_pid=data["mlflow"]["pid"],
        )

    def is_running(self) -> bool:
        return _alive(self.s3_pid, "moto") and _alive(self.mlflow_pid, "mlflow")


def _alive(pid: int, expect: str) -> bool:
    """True if ``pid`` runs and is still the process we started (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return expect in cmdline


def read_state(state_dir: Path) -> Stack | None:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        return Stack.from_json(state_dir, data)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        raise UsageError(
            f"{state_dir / STATE_FILE} is damaged ({exc})", hint="run bridge dev down"
        ) from None


def shell_exports(env: dict[str, str]) -> str:
    return "".join(f"export {k}={v}\n" for k, v in env.items())


def up(state_dir: Path | None = None, timeout: float = 120.0) -> tuple[Stack, bool]:
    """Start the stack, or return the one already running there. (stack, started_now)."""
    state_dir = (state_dir or default_state_dir()).resolve()
    existing = read_state(state_dir)
    if existing is not None:
        if existing.is_running():
            return existing, False
        log.info("found a stale dev stack state in %s; cleaning it up", state_dir)
        down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "mlflow.db").unlink(missing_ok=True)

    s3_port, mlflow_port = free_port(), free_port()
    base_env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
        "AWS_DEFAULT_REGION": DEV_REGION,
    }
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_TRACKING_URI"):
        base_env.pop(var, None)
    s3_pid = _spawn(
        [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], state_dir / "s3.log", base_env
    )
    stack = Stack(state_dir, s3_port, mlflow_port, s3_pid, 0)
    try:
        _wait_http(
            f"{stack.s3_url}/moto-api/", timeout, "S3 server (moto_server)", state_dir / "s3.log"
        )
        _create_buckets(stack)
        mlflow_env = {
            **base_env,
            "MLFLOW_S3_ENDPOINT_URL": stack.s3_url,
            # Let the registry call webhooks on loopback (the daemon's receiver).
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": _encryption_key(state_dir),
            # The background job runner (GenAI evaluation jobs) is not needed here.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        stack.mlflow_pid = _spawn(
            [
                _bin("mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{state_dir / 'mlflow.db'}",
                "--artifacts-destination",
                f"s3://{ARTIFACT_BUCKET}/",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "2",
            ],
            state_dir / "mlflow.log",
            mlflow_env,
        )
        _wait_http(
            f"{stack.mlflow_url}/health",
            timeout,
            "MLflow server",
            state_dir / "mlflow.log",
            stack.mlflow_pid,
        )
    except BaseException:
        _stop(stack.s3_pid, "moto")
        if stack.mlflow_pid:
            _stop(stack.mlflow_pid, "mlflow")
        raise
    (state_dir / STATE_FILE).write_text(
        json.dumps(stack.to_json(), indent=2, sort_keys=True) + "\n"
    )
    return stack, True


def down(state_dir: Path | None = None) -> Stack | None:
    """Stop what `up` started in ``state_dir``; a no-op if nothing is recorded."""
    state_dir = (state_dir or default_state_dir()).resolve()
    stack = read_state(state_dir)
    if stack is None:
        return None
    _stop(stack.mlflow_pid, "mlflow")
    _stop(stack.s3_pid, "moto")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    (state_dir / "mlflow.db").unlink(missing_ok=True)
    return stack


def _encryption_key(state_dir: Path) -> str:
    path = state_dir / "webhook-encryption.key"
    if not path.exists():
        path.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> int:
    with open(log_path, "ab") as logfile:
        proc = subprocess.Popen(
            cmd,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=log_path.parent,
        )
    return proc.pid


def _stop(pid: int, expect: str, grace: float = 10.0) -> None:
    if not pid or not _alive(pid, expect):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _alive(pid, expect) or _zombie(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not _alive(pid, "")
    return done == pid or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return False


def _wait_http(url: str, timeout: float, what: str, log_path: Path, pid: int | None = None) -> None:
    """Wait until ``url`` answers; give up at once if process ``pid`` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if pid is not None and _exited(pid):
            raise TemporaryError(f"{what} exited during start-up", hint=f"see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise TemporaryError(
        f"{what} did not become healthy within {timeout:.0f}s ({last})", hint=f"see {log_path}"
    )


def _create_buckets(stack: Stack) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_url,
        aws_access_key_id=DEV_ACCESS_KEY,
        aws_secret_access_key=DEV_SECRET_KEY,
        region_name=DEV_REGION,
    )
    for bucket in (ARTIFACT_BUCKET, TARGET_BUCKET):
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as exc:  # noqa: BLE001 - reported as one line, stack stopped by caller
            raise PermanentError(
                f"could not create bucket {bucket!r} on {stack.s3_url}: {exc}"
            ) from None
