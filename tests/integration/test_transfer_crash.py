"""Crash torture: SIGKILL a sync at random instants; no marker ever covers an incomplete copy."""

from __future__ import annotations

import pytest

from bridge.names import k8s_name

from .conftest import unique
from .faulty_s3 import FaultyS3
from .transfer_support import create_version, model_files, torture

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", ["server-side", "streamed"])
def test_sigkill_at_random_points_then_rerun_completes(scope, client, s3, stack, path):
    name = unique(f"xfer-crash-{path}")
    files = model_files(big=6 * 1024 * 1024, small=40, seed=5)
    v = create_version(client, s3, name, files)
    client.set_registered_model_alias(name, scope.alias, v)
    env = {**scope.env, "BRIDGE_TRANSFER_PART_SIZE": "5MiB", "BRIDGE_TRANSFER_CONCURRENCY": "2"}
    proxy = None
    if path == "streamed":
        # the same S3 server under another name: a "different endpoint" (ranged + multipart)
        proxy = FaultyS3(stack.s3_url, every=10**9)
        env["BRIDGE_TARGET_ENDPOINT_URL"] = proxy.other_url
    try:
        stats = torture(env, s3, scope.target_uri, f"{k8s_name(name)}/{v}", kills=5, seed=len(path))
    finally:
        if proxy is not None:
            proxy.stop()
    assert stats["kills"] == 5
