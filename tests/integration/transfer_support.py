"""Helpers for the transfer tests: hand-made model versions, a second S3 server.

Versions are created straight through the registry API over files uploaded to
MLflow's artifact bucket, so a test can choose file sizes and counts without
training anything. ``mlflow-artifacts:/`` sources exercise the mapping to
BRIDGE_SOURCE_ARTIFACTS_URI (and the proxy fallback), ``s3://`` sources the
direct path.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid

import boto3

from bridge import devstack

MLMODEL = (
    b"flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.pkl\n"
)


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=devstack.DEV_ACCESS_KEY,
        aws_secret_access_key=devstack.DEV_SECRET_KEY,
        region_name=devstack.DEV_REGION,
    )


def model_files(big: int = 3 * 1024 * 1024, small: int = 12, seed: int = 0) -> dict[str, bytes]:
    rnd = __import__("random").Random(seed)
    files = {"MLmodel": MLMODEL, "model.pkl": rnd.randbytes(big), "empty.txt": b""}
    for i in range(small):
        files[f"data/part-{i:03d}.bin"] = rnd.randbytes(rnd.randint(1, 64 * 1024))
    return files


def create_version(
    client,
    s3,
    name: str,
    files: dict[str, bytes],
    scheme: str = "mlflow-artifacts",
    with_run: bool = True,
):
    """Upload ``files`` under a new run's artifacts and register them as a new version
    (linked to that run unless ``with_run`` is false, as a path registered by hand is)."""
    exp = client.get_experiment_by_name("bridge-transfer-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("bridge-transfer-tests")
    run = client.create_run(exp_id)
    client.set_terminated(run.info.run_id)
    artifact_uri = run.info.artifact_uri  # mlflow-artifacts:/<exp>/<run>/artifacts
    root = artifact_uri.split(":", 1)[1].lstrip("/") + f"/model-{uuid.uuid4().hex[:6]}"
    for path, data in files.items():
        s3.put_object(Bucket=devstack.ARTIFACT_BUCKET, Key=f"{root}/{path}", Body=data)
    source = (
        f"mlflow-artifacts:/{root}"
        if scheme == "mlflow-artifacts"
        else f"s3://{devstack.ARTIFACT_BUCKET}/{root}"
    )
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - already exists
        pass
    mv = client.create_model_version(name, source, run_id=run.info.run_id if with_run else None)
    return str(mv.version)


def split(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix


def stored(s3, storage_uri: str) -> dict[str, bytes]:
    bucket, prefix = split(storage_uri)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) :]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def check_target(s3, storage_uri: str, files: dict[str, bytes] | None = None) -> dict:
    """Assert the marker lists exactly what is stored, byte for byte; return the marker."""
    objects = stored(s3, storage_uri)
    marker = json.loads(objects.pop(".bridge-manifest.json"))
    listed = {f["path"]: f for f in marker["files"]}
    assert set(listed) == set(objects)
    for path, data in objects.items():
        assert listed[path]["size"] == len(data), path
        assert listed[path]["sha256"] == hashlib.sha256(data).hexdigest(), path
    if files is not None:
        assert objects == files
    return marker


class SecondS3:
    """Another moto_server: a target on a different endpoint than MLflow's artifacts."""

    _instance: SecondS3 | None = None

    def __init__(self, tmp_dir):
        self.port = devstack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        self.log = open(os.path.join(tmp_dir, "second-s3.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [devstack._bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        devstack._wait_http(f"{self.url}/moto-api/", 60, "second S3 server", tmp_dir)
        self.client = s3_client(self.url)
        self.client.create_bucket(Bucket="remote-models")

    @classmethod
    def get(cls, request, tmp_path_factory) -> SecondS3:
        if cls._instance is None:
            cls._instance = cls(str(tmp_path_factory.mktemp("second-s3")))
            request.session.config.add_cleanup(cls._instance.stop)
        return cls._instance

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        SecondS3._instance = None


# --- crash torture ---------------------------------------------------------------

_CHILD = """
import sys
import bridge.cli, bridge.publish, bridge.registry, bridge.store, bridge.sync, mlflow, boto3
print("ready", flush=True)
sys.stdin.readline()
bridge.cli.main(["sync", "--once", "--output", "json"])
"""


def _marker_ok(s3, storage_uri: str) -> bool | None:
    """None: no marker (unpublished). True: marker over a complete target. False: broken."""
    bucket, prefix = split(storage_uri)
    try:
        s3.head_object(Bucket=bucket, Key=prefix + ".bridge-manifest.json")
    except s3.exceptions.ClientError:
        return None
    try:
        check_target(s3, storage_uri)
    except AssertionError:
        return False
    return True


def sync_in_process(env: dict, target: str) -> None:
    """One `bridge sync --once` pass in this process (no interpreter start-up)."""
    from bridge.runner import build_reconciler
    from bridge.settings import load_settings

    settings = load_settings(env={**env, "BRIDGE_TARGET_URI": target})
    report = build_reconciler(settings).run_once()
    assert report.exit_code == 0, [e.one_line() for e in report.errors]


def torture(env: dict, s3, target_base: str, storage_path: str, kills: int, seed: int = 0) -> dict:
    """SIGKILL `bridge sync --once` at random instants of its copy, then rerun it.

    Each round uses a fresh target prefix. The child process imports
    everything, says "ready" and waits; the kill lands uniformly within the
    duration of an uninterrupted child run (measured first) after it is told to go. After
    every kill, a marker, if any, must cover a complete target; after every
    rerun the target must verify and hold no unfinished multipart upload.
    """
    import random
    import signal
    import sys
    import time

    rnd = random.Random(seed)

    def spawn(target):
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            env={**os.environ, **env, "BRIDGE_TARGET_URI": target},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def go(proc) -> None:
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()

    # The kill window is the time an uninterrupted child takes from "go" to exit.
    # The next child imports while the current round runs.
    calibrate = spawn(f"{target_base}-calibrate")
    upcoming = spawn(f"{target_base}-0")
    go(calibrate)
    t0 = time.monotonic()
    calibrate.communicate(timeout=600)
    full = time.monotonic() - t0
    assert calibrate.returncode == 0, "the uninterrupted sync failed"
    stats = {"kills": 0, "published_at_kill": 0, "unpublished_at_kill": 0, "full_copy_s": full}
    for i in range(kills):
        target = f"{target_base}-{i}"
        uri = f"{target}/{storage_path.strip('/')}/"
        proc = upcoming
        go(proc)
        upcoming = spawn(f"{target_base}-{i + 1}") if i + 1 < kills else None
        time.sleep(rnd.uniform(0, full))
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        proc.stdin.close()
        proc.stdout.close()
        stats["kills"] += 1
        at_kill = _marker_ok(s3, uri)
        assert at_kill is not False, f"round {i}: a marker points at an incomplete target"
        stats["published_at_kill" if at_kill else "unpublished_at_kill"] += 1
        sync_in_process(env, target)
        assert _marker_ok(s3, uri) is True, f"round {i}: the rerun did not complete the target"
        bucket, prefix = split(uri)
        uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        assert uploads == [], f"round {i}: unfinished uploads left: {uploads}"
    return stats


def proxy_copy_setup(scope, client, s3, big: bytes, label: str, env: dict[str, str]):
    """A version of ``MLmodel`` + ``model.bin`` (``big``) read through MLflow's proxy (no
    S3 access to its bucket), 5 MiB parts: its listed source, a transfer engine on the
    target, and its download URI. ``env`` adds bridge settings."""
    from bridge.registry import ArtifactSource
    from bridge.settings import load_settings
    from bridge.store import Store
    from bridge.transfer import Engine, TransferOptions

    name = f"{label}-{uuid.uuid4().hex[:8]}"
    v = create_version(client, s3, name, {"MLmodel": b"flavors: {}\n", "model.bin": big})
    uri = client.get_model_version_download_uri(name, v)
    settings = load_settings(
        {},
        env={
            **scope.env,
            "BRIDGE_SOURCE_ARTIFACTS_URI": "",
            "BRIDGE_TRANSFER_PART_SIZE": "5MiB",
            **env,
        },
    )
    source = ArtifactSource(uri, scope.env["MLFLOW_TRACKING_URI"], settings)
    source.list_files()
    return source, Engine(Store(settings), TransferOptions.from_settings(settings)), uri


def copy_model_bin(engine, source, prefix: str, label: str):
    """Copy ``model.bin`` of a :func:`proxy_copy_setup` version under ``prefix``."""
    from bridge.progress import Progress

    return engine.copy_files(source, ["model.bin"], prefix, Progress(label, 0, 1, live=False))


def stored_model_bin(s3, scope, prefix: str) -> bytes:
    bucket, _ = split(scope.target_uri)
    return s3.get_object(Bucket=bucket, Key=f"{prefix}model.bin")["Body"].read()


class CutBody:
    """A source body that ends early: the connection dropped after ``keep`` bytes. Every
    other attribute (``etag``, ``total`` ...) is the wrapped body's."""

    def __init__(self, body, keep: int):
        self._body, self._left = body, keep

    def __getattr__(self, name: str):
        return getattr(self._body, name)

    def read(self, n: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self._body.read(min(n, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._body.close()
