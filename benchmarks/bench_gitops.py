"""GitOps output: a pass with nothing changed vs rewriting every file.

Renders N InferenceServices (+ the ServiceAccount) and writes them with
:class:`bridge.gitops.OutputDir`. The baseline is the same first write
(every file new, atomic with fsync); the measured pass is the second one,
where nothing changed and bridge must neither rewrite nor touch a file.
ratio = first pass / unchanged pass (higher is better).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bridge.gitops import OutputDir
from bridge.overrides import ServingSpec
from bridge.serving import (
    DesiredService,
    ServedVersion,
    ServingOptions,
    file_name,
    inference_service,
    service_account,
    to_yaml,
)

N = 300
OPTS = ServingOptions(namespace="models", service_account="sa", s3_endpoint_url="http://minio:9000")


def _render() -> dict[str, str]:
    files = {}
    for i in range(N):
        name = f"model-{i:04d}"
        v = ServedVersion(str(i), f"s3://b/{name}/{i}/", f"sha256:{i:064d}", "run", "src", "2")
        r = inference_service(
            DesiredService(name, name, "champion", v, ServingSpec("models")), OPTS
        )
        files[file_name(r)] = to_yaml(r)
    sa = service_account(OPTS, "models")
    files[file_name(sa)] = to_yaml(sa)
    return files


def run() -> list[dict]:
    started = time.perf_counter()
    files = _render()
    render_s = time.perf_counter() - started  # rendering is outside the timed passes
    with tempfile.TemporaryDirectory() as tmp:
        out = OutputDir(Path(tmp) / "gitops")
        t0 = time.perf_counter()
        first = out.reconcile(files, lambda _n: True)
        t1 = time.perf_counter()
        again = _render()
        t1b = time.perf_counter()
        second = out.reconcile(again, lambda _n: True)
        t2 = time.perf_counter()
    assert len(first.written) == N + 2 and not second.written
    return [
        {
            "name": f"gitops unchanged pass, {N} models",
            "ratio": round((t1 - t0) / max(t2 - t1b, 1e-9), 2),
            "first_pass_s": round(t1 - t0, 4),
            "unchanged_pass_s": round(t2 - t1b, 4),
            "render_s": round(render_s, 4),
        }
    ]
