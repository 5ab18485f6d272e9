"""Concurrent copies of one version never publish a marker over missing files.

Real processes throughout: three `bridge sync --once` children race on the same
registry version and the same target prefix, against the session's real
`mlflow server` (sqlite) and moto_server (the S3 emulator), on the streamed
path (target on "another endpoint": the same moto_server behind a pass-through
proxy) and the server-side path (the model's large file above the copy
threshold, so both paths use multipart uploads a racer could cancel). After
the racers exit, a marker (if any) must list exactly what is stored; a later
pass must leave the version published and complete; no unfinished multipart
upload may stay behind.

The daemon test uses the Lease API of the local HTTP fake in
tests/fake_k8s_api.py (no Kubernetes API server can run here): a leader whose
Lease is taken over mid-copy must stop copying and never write the marker.
The takeover is a plain Lease update (PUT with the resourceVersion read), as
another replica would write it: holderIdentity, renewTime, leaseDurationSeconds.

Sources read for the S3 side: the marker is written with ``If-None-Match: *``
(botocore 1.44.5, data/s3/2006-03-01/service-2.json: PutObjectRequest.IfNoneMatch);
moto 5.2.5 answers 412 PreconditionFailed when the key exists
(moto/s3/responses.py, put_object), but its ListMultipartUploads reports one
fixed ``Initiated`` date for every upload (moto/s3/responses.py,
list_multipart_uploads), so upload age cannot tell a live attempt from a dead one.

Measured on the code before the fix (this file, 12 trials per path, a loaded
2-core machine): with 3 racers, 10 of 12 trials failed on the streamed path (6
with a marker over missing files, 4 with a racer killed by another's abort) and
2 of 12 on the server-side path (both a marker over missing files); with 2
racers, 2 of 12 and 4 of 12. After the fix: 12 of 12 pass on both paths.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from bridge.names import k8s_name
from tests.fake_k8s_api import FakeKubeAPI

from .conftest import unique
from .daemon_helpers import start_daemon, wait_until
from .faulty_s3 import FaultyS3
from .transfer_support import _marker_ok, create_version, model_files, split, sync_in_process

pytestmark = pytest.mark.integration

RACERS = 3
TRIALS = 12

_CHILD = """
import sys
import bridge.cli, bridge.publish, bridge.registry, bridge.store, bridge.sync, mlflow, boto3
print("ready", flush=True)
sys.stdin.readline()
bridge.cli.main(["sync", "--once", "--output", "json"])
"""


def _spawn(env: dict, target: str) -> subprocess.Popen:
    """A `bridge sync --once` child that imports everything, says "ready", waits for "go"."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        env={**os.environ, **env, "BRIDGE_TARGET_URI": target},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _race_files() -> dict[str, bytes]:
    """Several files above the part size, so that multipart uploads are in flight
    for most of a copy, plus small ones."""
    rnd = random.Random(13)
    files = model_files(big=12 * 1024 * 1024, small=20, seed=13)
    for i in range(4):
        files[f"data/shard-{i}.bin"] = rnd.randbytes(6 * 1024 * 1024)
    return files


def _path_env(scope, stack, path: str) -> tuple[dict, FaultyS3 | None]:
    env = {**scope.env, "BRIDGE_TRANSFER_PART_SIZE": "5MiB", "BRIDGE_TRANSFER_CONCURRENCY": "2"}
    if path == "streamed":
        # the same S3 server under another name: a "different endpoint" (read + multipart upload)
        proxy = FaultyS3(stack.s3_url, every=0)
        env["BRIDGE_TARGET_ENDPOINT_URL"] = proxy.other_url
        return env, proxy
    # above the threshold the large file is copied with UploadPartCopy (a multipart upload)
    env["BRIDGE_TRANSFER_COPY_THRESHOLD"] = "5MiB"
    return env, None


@pytest.mark.parametrize("path", ["streamed", "server-side"])
def test_racing_syncs_never_publish_a_marker_over_missing_files(scope, client, s3, stack, path):
    name = unique(f"race-{path}")
    files = _race_files()
    v = create_version(client, s3, name, files)
    client.set_registered_model_alias(name, scope.alias, v)
    env, proxy = _path_env(scope, stack, path)
    rnd = random.Random(path)
    failures: list[str] = []
    upcoming: list[subprocess.Popen] = []
    try:
        # One uninterrupted run sets the window in which the second racer starts.
        solo = _spawn(env, f"{scope.target_uri}-solo")
        _go(solo)
        t0 = time.monotonic()
        solo.communicate(timeout=600)
        window = time.monotonic() - t0
        assert solo.returncode == 0, "an uncontested sync failed"

        upcoming = [_spawn(env, f"{scope.target_uri}-0") for _ in range(RACERS)]
        for i in range(TRIALS):
            target = f"{scope.target_uri}-{i}"
            uri = f"{target}/{k8s_name(name)}/{v}/"
            racers = upcoming
            _go(racers[0])
            for racer in racers[1:]:
                # the second racer starts anywhere in the first part of the first one's copy
                time.sleep(rnd.uniform(0, 0.6 * window))
                _go(racer)
            if i + 1 < TRIALS:  # the next trial's children import while this one runs
                upcoming = [_spawn(env, f"{scope.target_uri}-{i + 1}") for _ in range(RACERS)]
            for racer in racers:
                out, err = racer.communicate(timeout=600)
                if racer.returncode != 0:
                    failures.append(f"trial {i}: a racer exited {racer.returncode}: {err[-400:]}")
                else:
                    states = {r["state"] for r in json.loads(out)}
                    if states - {"synced", "unchanged"}:
                        failures.append(f"trial {i}: a racer reported {states}")
            if _marker_ok(s3, uri) is False:
                failures.append(f"trial {i}: after the race a marker lists missing files")
            sync_in_process(env, target)  # a later pass
            if _marker_ok(s3, uri) is not True:
                failures.append(f"trial {i}: after a later pass the version is not complete")
            bucket, prefix = split(uri)
            uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
            if uploads:
                failures.append(f"trial {i}: {len(uploads)} unfinished upload(s) left")
    finally:
        for child in upcoming:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        if proxy is not None:
            proxy.stop()
    bad_trials = {f.split(":")[0] for f in failures}
    assert not failures, (
        f"{len(bad_trials)} of {TRIALS} trials failed ({path} path):\n" + "\n".join(failures)
    )


NS, LEASE = "mlops", "bridge-race-lease"
FILES = 40


def _steal_lease(kubeconfig) -> None:
    """Another replica takes the Lease over: holder and renewTime rewritten, a long duration."""
    from datetime import UTC, datetime

    from bridge.kube import load_api_client
    from bridge.lease import LeaseLock

    lock = LeaseLock(LEASE, NS, api=load_api_client(str(kubeconfig), None))
    while True:  # the leader renews meanwhile: retry on a resourceVersion conflict
        record = lock.read()
        record.holder, record.renew_time, record.duration = (
            "another-replica",
            datetime.now(UTC),
            600,
        )
        if lock.write(record, create=False):
            return


def test_daemon_that_loses_its_lease_mid_copy_stops_and_publishes_nothing_fake_k8s_api(
    scope, client, s3, stack, tmp_path
):
    """Fencing: the leader's copy checks leadership before each file, chunk and the marker."""
    name = unique("race-fence")
    files = model_files(big=1024, small=FILES, seed=3)
    v = create_version(client, s3, name, files)
    client.set_registered_model_alias(name, scope.alias, v)
    api = FakeKubeAPI().start()
    # A slow store on "another endpoint": every write waits, the copy takes a while.
    slow = FaultyS3(stack.s3_url, every=0, write_delay=0.3)
    env = {
        **scope.env,
        "KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        "BRIDGE_LEADER_ELECTION": "true",
        "BRIDGE_LEASE_NAMESPACE": NS,
        "BRIDGE_LEASE_NAME": LEASE,
        "BRIDGE_LEASE_DURATION": "3",
        "BRIDGE_POLL_INTERVAL": "600",
        "BRIDGE_TARGET_ENDPOINT_URL": slow.other_url,
        "BRIDGE_TRANSFER_CONCURRENCY": "1",
    }
    bucket, prefix = split(f"{scope.target_uri}/{k8s_name(name)}/{v}/")

    def stored() -> set[str]:
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return {o["Key"][len(prefix) :] for o in page.get("Contents", [])}

    d = start_daemon(env, tmp_path)
    try:
        wait_until(lambda: len(stored()) >= 2, 120, "the leader never started copying", d)
        _steal_lease(tmp_path / "kubeconfig")
        wait_until(lambda: d.get("/readyz")[1].strip() == "standby", 60, "still leader", d)
        wait_until(
            lambda: "lost the lease mid-pass" in d.log() or ": synced (version" in d.log(),
            120,
            "the pass never ended",
            d,
        )
        left = stored()
    finally:
        d.terminate()
        slow.stop()
        api.stop()
    assert ".bridge-manifest.json" not in left, "a replica that lost its Lease published"
    assert len(left) < len(files), "the copy went on after the Lease was lost"
    assert "lost the lease mid-pass" in d.log()
