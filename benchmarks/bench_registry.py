"""A large registry: 10,000 registered models, 1,000 of them approved.

Rows (absolute wall times of new processes, interpreter start included, as cron
or CI runs them; targets from issue 17):

* one unchanged `bridge sync --once` pass (every approved version already
  published): target < 5 s;
* `bridge status --output json`: target < 10 s.

The registry rows are written with MLflow's own ORM models on the server's
SQLite database (the rows create_registered_model / create_model_version /
set_registered_model_alias write), as benchmarks/bench_status.py does; the
first sync that publishes the approved versions is real and not timed. The
processes run under BRIDGE_BENCH_RUNTIME_PYTHON when set (`make bench`: the
daemon image's environment) and, for the sync pass, also under this
interpreter (the full dev install).
Sizes: BENCH_REGISTRY_MODELS (default 10000), BENCH_REGISTRY_APPROVED (default 1000).
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

N_MODELS = int(os.environ.get("BENCH_REGISTRY_MODELS", "10000"))
N_APPROVED = int(os.environ.get("BENCH_REGISTRY_APPROVED", "1000"))
ALIAS = "champion"
SYNC_TARGET_S = 5.0
STATUS_TARGET_S = 10.0


def _seed(state_dir: Path, source: str) -> int:
    from mlflow.store.model_registry.dbmodels.models import (
        SqlModelVersion,
        SqlRegisteredModel,
        SqlRegisteredModelAlias,
    )
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    registry = SqlAlchemyStore(f"sqlite:///{state_dir / 'mlflow.db'}")
    now = int(time.time() * 1000)
    step = max(1, N_MODELS // max(1, N_APPROVED))
    approved = 0
    with registry.ManagedSessionMaker() as session:
        for i in range(N_MODELS):
            name = f"reg-{i:05d}"
            rows = [
                SqlRegisteredModel(name=name, creation_time=now, last_updated_time=now),
                SqlModelVersion(
                    name=name,
                    version=1,
                    creation_time=now,
                    last_updated_time=now,
                    source=source,
                    storage_location=source,
                ),
            ]
            if i % step == 0 and approved < N_APPROVED:
                rows.append(SqlRegisteredModelAlias(name=name, alias=ALIAS, version=1))
                approved += 1
            session.add_all(registry._with_workspace_field(r) for r in rows)
    return approved


def _command(python: str, env: dict, *args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    res = subprocess.run(
        [python, "-m", "bridge", *args],
        env={**os.environ, **env, "BRIDGE_PROGRESS": "never"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return seconds, res.stdout


def run() -> list[dict]:
    from bridge import devstack
    from tests.integration.transfer_support import MLMODEL, s3_client

    runtime = os.environ.get("BRIDGE_BENCH_RUNTIME_PYTHON") or sys.executable
    state_dir = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    stack, _ = devstack.up(state_dir)
    try:
        s3 = s3_client(stack.s3_url)
        root = f"bench-registry/{uuid.uuid4().hex[:6]}"
        for path, data in {"MLmodel": MLMODEL, "model.pkl": os.urandom(2048)}.items():
            s3.put_object(Bucket=devstack.ARTIFACT_BUCKET, Key=f"{root}/{path}", Body=data)
        t0 = time.monotonic()
        approved = _seed(state_dir, f"s3://{devstack.ARTIFACT_BUCKET}/{root}")
        seed_s = time.monotonic() - t0
        env = {
            **stack.env(),
            "BRIDGE_ALIAS": ALIAS,
            "BRIDGE_TARGET_URI": f"s3://{devstack.TARGET_BUCKET}/reg-{uuid.uuid4().hex[:6]}",
            "BRIDGE_OUTPUT_DIR": str(state_dir / "out"),
        }
        first_s, out = _command(runtime, env, "sync", "--once", "--output", "json")
        first = json.loads(out)
        assert len(first) == approved and all(r["state"] == "synced" for r in first)
        sync_s, out = _command(runtime, env, "sync", "--once", "--output", "json")
        again = json.loads(out)
        assert len(again) == approved and all(r["bytes_copied"] == 0 for r in again)
        full_s, _ = _command(sys.executable, env, "sync", "--once", "--output", "json")
        status_s, out = _command(runtime, env, "status", "--output", "json")
        assert len(json.loads(out)) == approved
    finally:
        devstack.down(state_dir)
    label = f"{N_MODELS} registered models, {approved} approved"
    return [
        {
            "name": f"unchanged sync pass, {label} (new process)",
            "value": round(sync_s, 2),
            "unit": "s",
            "target": f"< {SYNC_TARGET_S:.0f} s",
            "met": sync_s < SYNC_TARGET_S,
            "full_install_s": round(full_s, 2),
            "first_sync_s": round(first_s, 2),
            "seed_s": round(seed_s, 1),
            "python": runtime,
        },
        {
            "name": f"bridge status, {label} (new process)",
            "value": round(status_s, 2),
            "unit": "s",
            "target": f"< {STATUS_TARGET_S:.0f} s",
            "met": status_s < STATUS_TARGET_S,
        },
    ]
