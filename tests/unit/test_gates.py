"""The pure gate logic: requirement parsing, comparisons, regression, reports."""

from __future__ import annotations

import math
from xml.etree import ElementTree as ET

import pytest

from bridge import gates as g
from bridge.errors import UsageError


@pytest.mark.parametrize(
    "text, metric, op, value",
    [
        ("accuracy>=0.9", "accuracy", ">=", 0.9),
        ("accuracy > 0.9", "accuracy", ">", 0.9),
        ("val/loss<=0.25", "val/loss", "<=", 0.25),
        ("rmse<1e-2", "rmse", "<", 0.01),
        ("f1 score == 1", "f1 score", "==", 1.0),
        ("  auc>=-3  ", "auc", ">=", -3.0),
    ],
)
def test_parse_requirement(text, metric, op, value):
    req = g.parse_requirement(text)
    assert (req.metric, req.op, req.value) == (metric, op, value)


@pytest.mark.parametrize(
    "text",
    [
        "accuracy",
        "accuracy>=",
        ">=0.9",
        "accuracy=>0.9",
        "accuracy!=0.9",
        "accuracy>=high",
        "accuracy>=nan",
        "accuracy>=inf",
        "a>=1>=2",
        "accuracy=0.9",
        "",
    ],
)
def test_malformed_requirement_is_a_usage_error(text):
    with pytest.raises(UsageError) as err:
        g.parse_requirement(text)
    assert err.value.exit_code == 2
    assert "--require" in err.value.one_line()


@pytest.mark.parametrize(
    "op, actual, ok",
    [
        (">=", 0.9, True),
        (">=", 0.89, False),
        (">", 0.9, False),
        (">", 0.91, True),
        ("<=", 0.9, True),
        ("<=", 0.91, False),
        ("<", 0.9, False),
        ("<", 0.5, True),
        ("==", 0.9, True),
        ("==", 0.9000001, False),
        ("==", 0.1 + 0.8, True),
        (">=", math.nan, False),
    ],
)
def test_requirement_holds(op, actual, ok):
    assert g.Requirement("m", op, 0.9).holds(actual) is ok


def test_require_gate_reports_value_and_verdict():
    req = g.parse_requirement("accuracy>=0.95")
    res = g.require_gate(req, {"accuracy": 0.93}, "run1")
    assert not res.passed and res.status == "failed"
    assert "accuracy = 0.93" in res.message and "does not hold" in res.message
    assert g.require_gate(req, {"accuracy": 0.97}, "run1").passed


def test_require_gate_unknown_metric_lists_known_ones():
    with pytest.raises(UsageError) as err:
        g.require_gate(g.parse_requirement("acc>=1"), {"accuracy": 1.0, "f1": 1.0}, "r")
    assert "'acc'" in err.value.message and "accuracy, f1" in err.value.hint


@pytest.mark.parametrize(
    "text, amount, relative",
    [(None, 0.0, False), ("0.01", 0.01, False), ("2%", 2.0, True), (" 0 ", 0.0, False)],
)
def test_parse_tolerance(text, amount, relative):
    assert g.parse_tolerance(text) == g.Tolerance(amount, relative)


@pytest.mark.parametrize("text", ["-1", "x", "nan", "%", "inf"])
def test_bad_tolerance(text):
    with pytest.raises(UsageError):
        g.parse_tolerance(text)


def _reg(candidate, baseline, tol="0", lower=False):
    return g.regression_gate(
        "m",
        candidate,
        baseline,
        tolerance=g.parse_tolerance(tol),
        lower_is_better=lower,
        baseline_label="version 1 (champion)",
    )


def test_regression_higher_is_better():
    assert _reg(0.90, 0.90).passed
    assert _reg(0.91, 0.90).passed
    assert not _reg(0.89, 0.90).passed
    assert _reg(0.895, 0.90, "0.005").passed
    assert not _reg(0.894, 0.90, "0.005").passed
    assert _reg(0.882, 0.90, "2%").passed  # 2% of 0.90 = 0.018
    assert not _reg(0.881, 0.90, "2%").passed
    assert "regression" in _reg(0.5, 0.9).message


def test_regression_lower_is_better():
    assert _reg(0.10, 0.20, lower=True).passed
    assert not _reg(0.21, 0.20, lower=True).passed
    assert _reg(0.21, 0.20, "0.01", lower=True).passed
    assert "lower is better" in _reg(0.1, 0.2, lower=True).message


def test_regression_without_baseline_metric_or_nan_fails():
    assert not _reg(0.9, None).passed
    assert not _reg(math.nan, 0.9).passed


def test_missing_policy():
    assert g.missing("signature", "none", "warn").status == "warned"
    assert g.missing("signature", "none", "warn").passed
    assert not g.missing("signature", "none", "fail").passed
    with pytest.raises(UsageError):
        g.missing("signature", "none", "ignore")


def test_gate_dict_has_the_contract_keys():
    d = g.skipped("smoke", "not asked").as_dict()
    assert d == {"name": "smoke", "passed": True, "status": "skipped", "message": "not asked"}


def test_summary():
    gates = [g.passed("a", ""), g.failed("b", ""), g.warned("c", ""), g.skipped("d", "")]
    assert g.summary(gates) == {
        "passed": 1,
        "failed": 1,
        "warned": 1,
        "skipped": 1,
        "failed_gates": ["b"],
        "warned_gates": ["c"],
    }


def test_junit_xml_one_case_per_gate():
    gates = [g.passed("a", "ok"), g.failed("b", "too low <0.9>"), g.skipped("c", "n/a")]
    root = ET.fromstring(g.junit_xml(gates, "bridge promote m"))
    suite = root.find("testsuite")
    assert (
        suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    )
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"a", "b", "c"}
    assert cases["b"].find("failure").get("message") == "too low <0.9>"
    assert cases["c"].find("skipped") is not None
    assert cases["a"].find("failure") is None


def test_junit_xml_error_case():
    root = ET.fromstring(g.junit_xml([], "s", error="cannot reach MLflow"))
    suite = root.find("testsuite")
    assert suite.get("errors") == "1"
    assert suite.find("testcase/error").get("message") == "cannot reach MLflow"
