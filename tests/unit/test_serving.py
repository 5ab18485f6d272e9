import yaml

from bridge.serving import DesiredService, ServedVersion, ServingOptions, inference_service, to_yaml


def _desired(name="Fraud Model", kname="fraud-model-abc"):
    v = ServedVersion(
        "3",
        "s3://models/p/fraud-model-abc/3/",
        "sha256:" + "0" * 64,
        "run123",
        "mlflow-artifacts:/1/x",
    )
    return DesiredService(name, kname, "champion", v)


def test_inference_service_shape():
    isvc = inference_service(_desired(), ServingOptions("models", "bridge-sa"))
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "mlflow"
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"].endswith("/")
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "bridge-sa"
    meta = isvc["metadata"]
    assert meta["namespace"] == "models"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "mlflow-kubeflow-bridge"
    ann = meta["annotations"]
    assert ann["mlflow-kubeflow-bridge.io/registered-model"] == "Fraud Model"
    assert ann["mlflow-kubeflow-bridge.io/version"] == "3"
    assert ann["mlflow-kubeflow-bridge.io/run-id"] == "run123"
    assert ann["mlflow-kubeflow-bridge.io/content-digest"].startswith("sha256:")


def test_yaml_is_byte_stable_and_round_trips():
    isvc = inference_service(_desired(), ServingOptions("models", "bridge-sa"))
    a, b = (
        to_yaml(isvc),
        to_yaml(inference_service(_desired(), ServingOptions("models", "bridge-sa"))),
    )
    assert a == b
    assert yaml.safe_load(a) == isvc
    assert "version: '3'" in a  # versions stay strings
