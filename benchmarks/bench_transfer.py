"""Transfer engine vs the naive copy, on a real local stack (MLflow + two S3 servers).

Baseline: download the version with MLflow to a temporary directory, then
upload each file with boto3. The "MLflow proxy" rows read the source only
through MLflow's artifact proxy (no BRIDGE_SOURCE_ARTIFACTS_URI), as a client
without S3 access to MLflow's bucket must; the baseline reads through it too. Floor: the S3 server's own CopyObject of the same
objects, one after another. Rows report baseline / bridge ratios.

Sizes: BRIDGE_BENCH_TRANSFER_MB (default 1024) per model; the "many files"
model splits it into BRIDGE_BENCH_TRANSFER_FILES files (default 500); the
"small files" model has BRIDGE_BENCH_SMALL_FILES files (default 2000) of
BRIDGE_BENCH_SMALL_FILE_KB KiB (default 32);
BRIDGE_BENCH_RESYNC_VERSIONS (default 1000) approved versions for the re-sync
row; BRIDGE_BENCH_CRASH_KILLS (default 50) for the crash torture row (0 skips).
BRIDGE_BENCH_TRANSFER_ROWS (default: every row) runs only the rows whose name
contains one of its ";"-separated parts, e.g. ``MLflow proxy`` (the proxy rows).

The syncing process runs under BRIDGE_BENCH_RUNTIME_PYTHON when set (`make bench`
points it at a virtualenv with only what the daemon image installs), so its
memory is the deployed figure, not that of the test environment, where
`import mlflow` also loads pandas, scipy and pyarrow because they are installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MB = 1024 * 1024

# Peak RSS is the kernel's high-water mark of this process (VmHWM); ru_maxrss
# would carry over the benchmark parent's peak across exec.
_HWM = r"""
import json, sys, time

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
_CHILD = (
    _HWM
    + r"""
from bridge.runner import build_reconciler
from bridge.settings import load_settings
models = sys.argv[1:] or None
settings = load_settings()
reconciler = build_reconciler(settings)
rss0 = hwm()
out = {}
for run in ("first", "again"):
    t0 = time.monotonic()
    report = reconciler.run_once(models)
    out[run] = {"seconds": time.monotonic() - t0, "bytes": report.bytes_copied,
                "exit": report.exit_code, "n": len(report.results)}
out["rss_after_imports_mb"] = rss0
out["rss_peak_mb"] = hwm()
print(json.dumps(out))
"""
)


def _wanted(name: str) -> bool:
    """Whether a row is asked for (BRIDGE_BENCH_TRANSFER_ROWS; empty: every row)."""
    words = [w.strip() for w in os.environ.get("BRIDGE_BENCH_TRANSFER_ROWS", "").split(";")]
    words = [w for w in words if w]
    return not words or any(w in name for w in words)


def _add(rows: list[dict], row: dict) -> None:
    rows.append(row)
    print("   partial: " + json.dumps(row, sort_keys=True), file=sys.stderr, flush=True)


def _runtime_python() -> str:
    return os.environ.get("BRIDGE_BENCH_RUNTIME_PYTHON") or sys.executable


def _child(env: dict, models: list[str] | None) -> dict:
    res = subprocess.run(
        [_runtime_python(), "-c", _CHILD, *(models or [])],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def _sync_command(env: dict, python: str | None = None, *args: str) -> tuple[float, int]:
    """Wall time and bytes copied of one `bridge sync --once` command."""
    t0 = time.monotonic()
    res = subprocess.run(
        [python or _runtime_python(), "-m", "bridge", "sync", "--once", "--output", "json", *args],
        env={**os.environ, **env, "BRIDGE_PROGRESS": "never"},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return seconds, sum(r["bytes_copied"] for r in json.loads(res.stdout))


def _imports_rss(python: str) -> float:
    """RSS after the syncing process' imports, under another interpreter."""
    code = _HWM + (
        "import bridge.runner, bridge.sync, bridge.transfer, mlflow.tracking, boto3\nprint(hwm())\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def _naive(client, name: str, version: str, s3_target, bucket: str) -> float:
    import mlflow.artifacts

    t0 = time.monotonic()
    uri = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        prefix = f"naive-{uuid.uuid4().hex[:6]}/"
        for path in local.rglob("*"):
            if path.is_file():
                s3_target.upload_file(str(path), bucket, prefix + str(path.relative_to(local)))
    return time.monotonic() - t0


def _floor(s3, bucket: str, keys: list[str]) -> float:
    t0 = time.monotonic()
    dest = f"floor-{uuid.uuid4().hex[:6]}/"
    for key in keys:
        s3.copy_object(
            Bucket="bridge-models", Key=dest + key, CopySource={"Bucket": bucket, "Key": key}
        )
    return time.monotonic() - t0


def _files(total: int, count: int) -> dict[str, bytes]:
    from tests.integration.transfer_support import MLMODEL

    files = {"MLmodel": MLMODEL}
    each = max(1, total // count)
    block = os.urandom(MB)
    for i in range(count):
        data = (block * (each // MB + 1))[:each]
        files[f"data/f{i:04d}.bin"] = data[:-8] + i.to_bytes(8, "big") if len(data) > 8 else data
    return files


def run() -> list[dict]:
    from mlflow import MlflowClient

    from bridge import devstack
    from tests.integration.transfer_support import SecondS3, create_version, s3_client, torture

    size = int(os.environ.get("BRIDGE_BENCH_TRANSFER_MB", "1024")) * MB
    many = int(os.environ.get("BRIDGE_BENCH_TRANSFER_FILES", "500"))
    small_n = int(os.environ.get("BRIDGE_BENCH_SMALL_FILES", "2000"))
    small_kb = int(os.environ.get("BRIDGE_BENCH_SMALL_FILE_KB", "32"))
    versions = int(os.environ.get("BRIDGE_BENCH_RESYNC_VERSIONS", "1000"))
    kills = int(os.environ.get("BRIDGE_BENCH_CRASH_KILLS", "50"))
    rows: list[dict] = []
    tmp = tempfile.mkdtemp(prefix="bench-transfer-")
    stack, _ = devstack.up(Path(tmp) / "stack")
    second = None
    saved = dict(os.environ)
    try:
        os.environ.update(stack.env())
        # Benchmarks share one process: point mlflow's global client at this stack
        # (an earlier benchmark may have left it on a stack that is gone).
        import mlflow

        mlflow.set_tracking_uri(stack.mlflow_url)
        second = SecondS3(tmp)
        client = MlflowClient(stack.mlflow_url)
        s3 = s3_client(stack.s3_url)
        same = ("same endpoint", stack.s3_url, s3, "bridge-models")
        cross = ("cross endpoint", second.url, second.client, "remote-models")
        proxy = ("MLflow proxy", stack.s3_url, s3, "bridge-models")
        # the same with parallel byte ranges of the presigned URL (off by default: on
        # moto_server every ranged GET costs a read of the whole object)
        proxy_ranges = ("MLflow proxy, parallel ranges", stack.s3_url, s3, "bridge-models")
        models = {
            "one file": (
                {"MLmodel": _files(0, 1)["MLmodel"], "model.bin": os.urandom(size)},
                (same, cross, proxy, proxy_ranges),
            ),
            f"{many} files": (_files(size, many), (same, cross)),
            f"{small_n} small files": (_files(small_n * small_kb * 1024, small_n), (proxy,)),
        }
        for label, (files, all_paths) in models.items():
            mb = sum(map(len, files.values())) / MB
            paths = [p for p in all_paths if _wanted(f"copy {mb:.0f} MiB in {label}, {p[0]}")]
            part_copy = label == "one file" and _wanted("UploadPartCopy vs CopyObject")
            if not paths and not part_copy:
                continue
            name = f"bench-{uuid.uuid4().hex[:6]}"
            v = create_version(client, s3, name, files)
            client.set_registered_model_alias(name, "champion", v)
            src = client.get_model_version_download_uri(name, v)
            root = src.split(":", 1)[1].lstrip("/")
            keys = [f"{root}/{p}" for p in files]
            if any(p is same for p in paths):
                floor = _floor(s3, devstack.ARTIFACT_BUCKET, keys)
            for where, endpoint, target_s3, bucket in paths:
                base = _naive(client, name, v, target_s3, bucket)
                env = {
                    "BRIDGE_TARGET_URI": f"s3://{bucket}/{uuid.uuid4().hex[:6]}",
                    "BRIDGE_TARGET_ENDPOINT_URL": endpoint,
                }
                if where.startswith("MLflow proxy"):
                    env["BRIDGE_SOURCE_ARTIFACTS_URI"] = ""
                if where == proxy_ranges[0]:
                    env["BRIDGE_TRANSFER_PROXY_RANGES"] = "true"
                got = _child(env, [name])
                assert got["first"]["exit"] == 0 and got["again"]["bytes"] == 0
                row = {
                    "name": f"copy {mb:.0f} MiB in {label}, {where}",
                    "ratio": round(base / got["first"]["seconds"], 2),
                    "baseline_s": round(base, 2),
                    "bridge_s": round(got["first"]["seconds"], 2),
                    "rss_peak_mb": round(got["rss_peak_mb"], 1),
                    "rss_after_imports_mb": round(got["rss_after_imports_mb"], 1),
                    "copy_rss_growth_mb": round(
                        got["rss_peak_mb"] - got["rss_after_imports_mb"], 1
                    ),
                }
                if where == "same endpoint":
                    row["copyobject_floor_s"] = round(floor, 2)
                    row["floor_over_bridge"] = round(floor / got["first"]["seconds"], 2)
                _add(rows, row)
                if where == "same endpoint" and label != "one file":
                    # as CI runs it: a new `bridge sync --once` process in the full
                    # (dev) install, where MLflow could pull in pandas, SciPy, pyarrow
                    env["BRIDGE_TARGET_URI"] = f"s3://{bucket}/{uuid.uuid4().hex[:6]}"
                    whole_s, copied = _sync_command(env, sys.executable, "--model", name)
                    assert copied == sum(map(len, files.values()))
                    _add(
                        rows,
                        {
                            "name": f"whole process: copy {mb:.0f} MiB in {label}, "
                            f"{where}, full install",
                            "ratio": round(base / whole_s, 2),
                            "baseline_s": round(base, 2),
                            "bridge_command_s": round(whole_s, 2),
                            "python": sys.executable,
                        },
                    )
            if part_copy and any(r["name"].endswith("one file, same endpoint") for r in rows):
                # what is faster on this S3 server: one CopyObject or parallel UploadPartCopy?
                env = {
                    "BRIDGE_TARGET_URI": f"s3://bridge-models/{uuid.uuid4().hex[:6]}",
                    "BRIDGE_TRANSFER_COPY_THRESHOLD": "5MiB",
                }
                parts = _child(env, [name])
                single = next(r for r in rows if "one file, same endpoint" in r["name"])["bridge_s"]
                _add(
                    rows,
                    {
                        "name": f"copy {mb:.0f} MiB in one file: UploadPartCopy vs CopyObject",
                        "ratio": round(parts["first"]["seconds"] / single, 2),
                        "uploadpartcopy_s": round(parts["first"]["seconds"], 2),
                        "copyobject_s": single,
                    },
                )
        copies = [r for r in rows if "rss_peak_mb" in r]
        if copies:
            _add(
                rows,
                {
                    "name": "peak RSS of the copying process (max over the rows above)",
                    "value": max(r["rss_peak_mb"] for r in copies),
                    "unit": "MB",
                    "of_which_copy_growth_mb": max(r["copy_rss_growth_mb"] for r in copies),
                    "python": _runtime_python(),
                    "same_imports_in_this_env_mb": _imports_rss(sys.executable),
                },
            )
        if _wanted("re-sync of"):
            # re-sync of many unchanged approved versions
            alias = "bench-resync"
            tiny = {"MLmodel": _files(0, 1)["MLmodel"], "model.pkl": os.urandom(2048)}
            src_root = f"bench-resync/{uuid.uuid4().hex[:6]}"
            for p, data in tiny.items():
                s3.put_object(Bucket=devstack.ARTIFACT_BUCKET, Key=f"{src_root}/{p}", Body=data)
            for i in range(versions):
                name = f"resync-{i:04d}-{uuid.uuid4().hex[:4]}"
                client.create_registered_model(name)
                mv = client.create_model_version(
                    name, f"s3://{devstack.ARTIFACT_BUCKET}/{src_root}"
                )
                client.set_registered_model_alias(name, alias, mv.version)
            resync_env = {
                "BRIDGE_ALIAS": alias,
                "BRIDGE_TARGET_URI": f"s3://bridge-models/resync-{uuid.uuid4().hex[:6]}",
            }
            got = _child(resync_env, None)
            command_s, command_bytes = _sync_command(resync_env)
            _add(
                rows,
                {
                    "name": f"re-sync of {versions} unchanged approved versions vs their first sync",
                    "ratio": round(got["first"]["seconds"] / got["again"]["seconds"], 2),
                    "first_s": round(got["first"]["seconds"], 2),
                    "resync_s": round(got["again"]["seconds"], 2),
                    "resync_bytes": got["again"]["bytes"],
                    "first_bytes": got["first"]["bytes"],
                    # as a cron job runs it: a new `bridge sync --once`, interpreter start included
                    "resync_command_s": round(command_s, 2),
                    "resync_command_bytes": command_bytes,
                    "ratio_command": round(got["first"]["seconds"] / command_s, 2),
                },
            )
        if kills and _wanted("crash torture"):
            name = f"bench-crash-{uuid.uuid4().hex[:6]}"
            from tests.integration.transfer_support import model_files

            v = create_version(client, s3, name, model_files(big=8 * MB, small=60, seed=9))
            client.set_registered_model_alias(name, "bench-crash", v)
            env = {
                **stack.env(),
                "BRIDGE_ALIAS": "bench-crash",
                "BRIDGE_TRANSFER_PART_SIZE": "5MiB",
            }
            stats = torture(env, s3, "s3://bridge-models/crash", f"{name}/{v}", kills=kills)
            _add(
                rows,
                {
                    "name": f"crash torture: {kills} SIGKILLs, every rerun verified",
                    "value": kills,
                    "unit": "kills",
                    **stats,
                },
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if second is not None:
            second.stop()
        devstack.down(Path(tmp) / "stack")
    return rows
