import pytest

from bridge.names import MAX_NAME_LENGTH, is_dns1035_label, k8s_name
from bridge.registry import RegisteredModelInfo
from bridge.sync import assign_names


@pytest.mark.parametrize(
    "original",
    [
        "Fraud Model",
        "churn_model",
        "team.churn.v2",
        "UPPER",
        "9lives",
        "x" * 80,
        "--",
        "é-model",
        "a b_c.d",
    ],
)
def test_sanitized_names_are_valid_and_stable(original):
    name = k8s_name(original)
    assert is_dns1035_label(name, MAX_NAME_LENGTH), name
    assert k8s_name(original) == name


def test_valid_names_are_kept_as_they_are():
    assert k8s_name("fraud-detector") == "fraud-detector"


def test_names_that_clean_to_the_same_base_stay_distinct():
    names = {k8s_name(n) for n in ("Churn_Model", "churn.model", "churn model", "CHURN-MODEL")}
    assert len(names) == 4


def test_long_names_are_truncated_with_hash():
    a, b = k8s_name("m" * 80), k8s_name("m" * 81)
    assert len(a) <= MAX_NAME_LENGTH and len(b) <= MAX_NAME_LENGTH and a != b


def test_assign_names_reports_true_collisions():
    # A valid name equal to another model's sanitized name is a real clash.
    clash = k8s_name("My_Model")
    models = [
        RegisteredModelInfo("My_Model", {}),
        RegisteredModelInfo(clash, {}),
        RegisteredModelInfo("ok", {}),
    ]
    names, errors = assign_names(models)
    assert names == {"ok": "ok"}
    assert set(errors) == {"My_Model", clash}
    assert all(e.exit_code == 1 and "rename" in e.one_line() for e in errors.values())
