"""Example Kubeflow pipeline: train -> log to MLflow -> register -> gate/promote -> deploy.

    make components          # compile it (with the components) to examples/kfp_pipeline.yaml
    make example-pipeline    # run it locally (kfp.local) against `bridge dev up`

On a cluster, upload examples/kfp_pipeline.yaml; every task reads MLflow from the
Secret `mlflow-credentials`, the S3 keys of the serving store from `bridge-s3`
and the serving target from the ConfigMap `bridge-config` (see docs/kfp.md).

The pipeline uses the compiled components/*/component.yaml, exactly as a pipeline
in another repository would.
"""

import argparse
import os
import sys
from pathlib import Path

from kfp import components, dsl

from bridge.kfp_run import lineage_inputs, use_mlflow_credentials

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_NAME = "mlflow-train-promote-deploy"

# Cluster wiring (names of objects in the pipeline's namespace; values are never compiled in).
MLFLOW_SECRET = "mlflow-credentials"
S3_SECRET = "bridge-s3"
BRIDGE_CONFIG_MAP = "bridge-config"


def load(name: str):
    """A compiled component from components/<name>/component.yaml."""
    where = Path(os.environ.get("BRIDGE_COMPONENTS_DIR") or ROOT / "components")
    return components.load_component_from_file(str(where / name / "component.yaml"))


train_and_log = load("train_and_log")
register_model = load("register_model")
promote_model = load("promote_model")
fetch_model = load("fetch_model")
deploy_model = load("deploy_model")


def _wire(task, *, serving: bool = False):
    """MLflow credentials on every task; the serving store only where it is used."""
    use_mlflow_credentials(
        task,
        mlflow_secret=MLFLOW_SECRET,
        s3_secret=S3_SECRET if serving else None,
        bridge_config_map=BRIDGE_CONFIG_MAP if serving else None,
    )
    # Every step writes to MLflow: a cached step would skip its side effects.
    task.set_caching_options(False)
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Train a scikit-learn model, log it to MLflow with KFP lineage, register it, "
    "gate and promote it with `bridge promote`, and render its KServe InferenceService.",
)
def pipeline(
    model_name: str = "iris-classifier",
    dataset: str = "iris",
    C: float = 1.0,
    experiment: str = "",
    alias: str = "champion",
    require: list = ["accuracy>=0.8"],  # noqa: B006 - KFP needs a literal default
    apply: bool = False,
) -> dsl.Artifact:
    train = _wire(
        train_and_log(dataset=dataset, C=C, experiment=experiment, **lineage_inputs(PIPELINE_NAME))
    ).set_display_name("train and log to MLflow")
    register = _wire(
        register_model(
            model_name=model_name,
            run_id=train.outputs["run_id"],
            model_uri=train.outputs["model_uri"],
        )
    ).set_display_name("register model version")
    promote = _wire(
        promote_model(
            model_name=model_name,
            version=register.outputs["version"],
            alias=alias,
            require=require,
        )
    ).set_display_name("gate and promote")
    fetch = _wire(fetch_model(model_name=model_name, alias=alias).after(promote))
    fetch.set_display_name("fetch promoted model")
    deploy = _wire(
        deploy_model(model_name=model_name, version=fetch.outputs["version"], apply=apply),
        serving=True,
    ).set_display_name("render InferenceService")
    return deploy.outputs["manifest"]


def run_local(pipeline_root: str, **arguments):
    """Run the pipeline with kfp.local in this Python environment (no containers, no pip)."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root)
    return pipeline(**arguments)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compile or locally run the example pipeline.")
    parser.add_argument("--compile", metavar="YAML", help="write the compiled pipeline here")
    parser.add_argument("--run-local", action="store_true", help="run it with kfp.local")
    parser.add_argument("--pipeline-root", default="./.bridge-dev/kfp-local")
    parser.add_argument("--model-name", default="iris-classifier")
    args = parser.parse_args(argv)
    if args.compile:
        from kfp import compiler

        compiler.Compiler().compile(pipeline, args.compile)
        print(f"wrote {args.compile}")
    if args.run_local:
        task = run_local(str(Path(args.pipeline_root).resolve()), model_name=args.model_name)
        print(f"InferenceService YAML: {task.output.path}")
    if not (args.compile or args.run_local):
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
