"""`bridge status` on a large registry: 2,000 registered models on a private dev stack.

Every model has the approval alias on a version whose source is a tiny
artifact; half of them are published (marker + file in the target store) and
emitted (InferenceService YAML in an output directory), so the run reads the
registry, the store and the served view. Compared, in the same run, with a naive
sequential baseline that asks MLflow and S3 model by model
(get_registered_model, get_model_version, get_run, the marker).

Result rows: ``ratio`` = baseline seconds / bridge seconds (higher is better),
plus the wall time of the real `bridge status` command line.
Size: BENCH_STATUS_MODELS (default 2000); see SETUP and BASELINE_SAMPLE below.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

N_MODELS = int(os.environ.get("BENCH_STATUS_MODELS", "2000"))
N_RUNS = 10
ALIAS = "champion"
WORKERS = 8
# "sql" (default): registry rows through MLflow's ORM on the server's database;
# "rest": through the server's REST API (slow on a busy machine: ~3 requests per model).
SETUP = os.environ.get("BENCH_STATUS_SETUP", "sql")
# The naive baseline is linear in the number of models (one model at a time);
# it runs on an evenly spread sample and is scaled to N_MODELS.
BASELINE_SAMPLE = int(os.environ.get("BENCH_STATUS_BASELINE_SAMPLE", "200"))

MLMODEL = b"""artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    python_version: 3.11.7
"""


def _populate(env: dict[str, str], state_dir: Path, out_dir: Path) -> list[str]:
    from mlflow import MlflowClient

    from bridge.gitops import OutputDir
    from bridge.names import k8s_name
    from bridge.publish import FileRecord, PublishedVersion, content_digest, marker_bytes
    from bridge.serving import (
        DesiredService,
        ServedVersion,
        ServingOptions,
        inference_service,
        to_yaml,
    )
    from bridge.settings import load_settings
    from bridge.store import Store

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("bench-status")
    tmp = Path(tempfile.mkdtemp(prefix="bench-status-"))
    (tmp / "model").mkdir()
    (tmp / "model" / "MLmodel").write_bytes(MLMODEL)

    def make_run(i: int) -> str:
        run = client.create_run(exp, tags={"kfp.pipeline_run_id": f"pr-{i}", "kfp.task_name": "t"})
        client.log_artifacts(run.info.run_id, str(tmp / "model"), "model")
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    settings = load_settings({}, env=env)
    store = Store(settings)
    record = FileRecord("MLmodel", len(MLMODEL), hashlib.sha256(MLMODEL).hexdigest())
    serving = ServingOptions(settings.namespace, settings.service_account)
    names = [f"bench-model-{i:05d}" for i in range(N_MODELS)]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        runs = list(pool.map(make_run, range(N_RUNS)))
    run_uris = {r: client.get_run(r).info.artifact_uri + "/model" for r in runs}
    run_of = {name: runs[i % N_RUNS] for i, name in enumerate(names)}

    if SETUP == "rest":
        # Through the server's REST API, in parallel.
        def register(name: str) -> str:
            client.create_registered_model(name)
            mv = client.create_model_version(
                name, run_uris[run_of[name]], run_id=run_of[name], await_creation_for=0
            )
            client.set_registered_model_alias(name, ALIAS, mv.version)
            return str(mv.version)

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            versions = dict(zip(names, pool.map(register, names), strict=True))
    else:
        # MLflow's own registry tables on the server's database file, written with
        # MLflow's ORM models in one transaction: the rows create_registered_model,
        # create_model_version and set_registered_model_alias write, in seconds.
        from mlflow.store.model_registry.dbmodels.models import (
            SqlModelVersion,
            SqlRegisteredModel,
            SqlRegisteredModelAlias,
        )
        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

        registry = SqlAlchemyStore(f"sqlite:///{state_dir / 'mlflow.db'}")
        now = int(time.time() * 1000)
        with registry.ManagedSessionMaker() as session:
            for name in names:
                source = run_uris[run_of[name]]
                session.add_all(
                    registry._with_workspace_field(row)
                    for row in (
                        SqlRegisteredModel(name=name, creation_time=now, last_updated_time=now),
                        SqlModelVersion(
                            name=name,
                            version=1,
                            creation_time=now,
                            last_updated_time=now,
                            source=source,
                            storage_location=source,
                            run_id=run_of[name],
                        ),  # fmt: skip
                        SqlRegisteredModelAlias(name=name, alias=ALIAS, version=1),
                    )
                )
        versions = dict.fromkeys(names, "1")

    def publish_and_emit(name: str) -> None:
        run_id, version, kname = run_of[name], versions[name], k8s_name(name)
        prefix = f"{store.prefix}{kname}/{version}/"
        store.put_bytes(prefix + "MLmodel", MLMODEL, "text/yaml")
        pv = PublishedVersion(
            name, version, store.uri(prefix), content_digest([record]),
            run_id, run_uris[run_id], (record,),
        )  # fmt: skip
        store.put_bytes(prefix + ".bridge-manifest.json", marker_bytes(pv))
        sv = ServedVersion(pv.version, pv.storage_uri, pv.digest, run_id, pv.source_uri)
        resource = inference_service(DesiredService(name, kname, ALIAS, sv), serving)
        (out_dir / f"{kname}.yaml").write_text(to_yaml(resource))

    # Every other model is published and emitted; the rest are pending.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(publish_and_emit, names[::2]))
    OutputDir(out_dir).reconcile(
        {p.name: p.read_text() for p in out_dir.glob("*.yaml")}, lambda _n: False
    )
    return names


def _naive(settings, sample: int) -> tuple[int, int]:
    """One model at a time, one request at a time: what a hand-written script does."""
    from mlflow import MlflowClient

    from bridge.names import k8s_name
    from bridge.publish import Publisher
    from bridge.store import Store

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    publisher = Publisher(Store(settings))
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names.extend(m.name for m in page)
        token = page.token
        if not token:
            break
    step = max(1, len(names) // sample)
    states = {}
    for name in names[::step]:
        rm = client.get_registered_model(name)
        if settings.alias not in rm.aliases:
            continue
        mv = client.get_model_version(name, rm.aliases[settings.alias])
        client.get_run(mv.run_id)
        pv = publisher.published(k8s_name(name), str(mv.version))
        states[name] = "published" if pv else "pending"
    return len(names), len(states)


def run() -> list[dict]:
    from bridge import devstack
    from bridge.settings import load_settings
    from bridge.status import status_report

    state_dir = Path(tempfile.mkdtemp(prefix="bench-status-stack-"))
    out_dir = state_dir / "out"
    out_dir.mkdir()
    saved = dict(os.environ)
    stack, _ = devstack.up(state_dir)
    try:
        env = {**stack.env(), "BRIDGE_ALIAS": ALIAS, "BRIDGE_OUTPUT_DIR": str(out_dir)}
        os.environ.update(env)
        started = time.monotonic()
        _populate(env, state_dir, out_dir)
        populate_s = time.monotonic() - started
        settings = load_settings({}, env=env)

        status_report(settings, ["bench-model-00000"])  # warm up: imports, connections
        started = time.monotonic()
        report = status_report(settings)
        bridge_s = time.monotonic() - started
        assert len(report) == N_MODELS, len(report)
        states = {r["state"] for r in report}
        assert states == {"in_sync", "pending"}, states

        started = time.monotonic()
        listed, sampled = _naive(settings, BASELINE_SAMPLE)
        naive_s = (time.monotonic() - started) * listed / sampled
        assert listed == N_MODELS

        started = time.monotonic()
        cli = subprocess.run(
            [sys.executable, "-m", "bridge", "status", "--output", "json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        cli_s = time.monotonic() - started
        assert cli.returncode == 0, cli.stderr
    finally:
        devstack.down(state_dir)
        os.environ.clear()
        os.environ.update(saved)
    return [
        {
            "name": f"status_{N_MODELS}_models_vs_naive_sequential",
            "ratio": round(naive_s / bridge_s, 2),
            "bridge_s": round(bridge_s, 2),
            "baseline_s": round(naive_s, 2),
            "models": N_MODELS,
            "published": N_MODELS // 2 + N_MODELS % 2,
            "baseline_models_timed": sampled,
            "setup": SETUP,
            "setup_s": round(populate_s, 1),
        },
        {
            "name": f"status_cli_{N_MODELS}_models_wall",
            "value": round(cli_s, 2),
            "unit": "s",
            "note": "bridge status --output json as a subprocess, interpreter start included",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
