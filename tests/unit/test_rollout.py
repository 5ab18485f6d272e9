"""The rollout state machine (bridge/rollout.py) and the guard templates (bridge/guards.py)."""

from __future__ import annotations

import pytest

from bridge import guards as gd
from bridge import rollout as ro
from bridge.errors import UsageError

PLAN = ro.Plan(steps=(10, 50, 100), bake=60, grace=30)
REV = gd.Revisions("ns", "fraud", "fraud-predictor-00002", "fraud-predictor-00001")


def _state(step=0, started=1000.0, **kw):
    return ro.State("2", "1", PLAN.steps, step, started, **kw)


def _result(name, value):
    query, kind = gd.TEMPLATES[name]
    guard = {
        "error-ratio": gd.Guard(name, query, "<", 0.01, kind),
        "latency-p95-ratio": gd.Guard(name, query, "<=", 1.2, kind),
        "min-requests": gd.Guard(name, query, ">=", 100, kind),
    }[name]
    return gd.GuardResult(guard, gd.render(guard, REV, 60), value)


HEALTHY = [_result("error-ratio", 0.001), _result("min-requests", 500)]


def test_a_new_canary_starts_at_the_first_step():
    d = ro.next_action(PLAN, None, ro.Observed("2", "1", None), now=1000)
    assert d.kind == ro.START and d.state.percent == 10 and d.state.step_started == 1000


def test_waits_for_the_bake_then_asks_for_the_guards():
    obs = ro.Observed("2", "1", "10")
    d = ro.next_action(PLAN, _state(), obs, now=1030)
    assert d.kind == ro.WAIT and d.wait == 30
    assert ro.next_action(PLAN, _state(), obs, now=1060).kind == ro.EVALUATE


def test_passing_guards_advance_and_the_last_step_completes():
    d = ro.judge(PLAN, _state(), HEALTHY, now=1060)
    assert d.kind == ro.ADVANCE and d.state.percent == 50 and d.state.step_started == 1060
    d = ro.judge(PLAN, d.state, HEALTHY, now=1120)
    assert d.kind == ro.COMPLETE_NOW and d.state.status == ro.COMPLETE and d.state.percent == 100


def test_a_failing_guard_aborts_with_query_value_and_threshold():
    d = ro.judge(PLAN, _state(step=1), [_result("error-ratio", 0.2)] + HEALTHY[1:], now=1060)
    assert d.kind == ro.ABORT_NOW and d.state.status == ro.ABORTED
    assert "error-ratio failed: 0.2 < 0.01" in d.reason
    assert 'revision_name="fraud-predictor-00002"' in d.reason
    assert d.state.last[0]["value"] == 0.2 and d.state.last[0]["threshold"] == 0.01


def test_missing_data_waits_out_the_grace_period_then_aborts():
    d = ro.judge(PLAN, _state(), [_result("error-ratio", None)], now=1060)
    assert d.kind == ro.WAIT and d.state.missing_since == 1060 and d.wait == 30
    d2 = ro.judge(PLAN, d.state, [_result("error-ratio", None)], now=1089)
    assert d2.kind == ro.WAIT
    d3 = ro.judge(PLAN, d2.state, [_result("error-ratio", None)], now=1090)
    assert d3.kind == ro.ABORT_NOW and "no data for guard(s) error-ratio" in d3.reason


def test_too_few_requests_count_as_missing_data_not_as_a_bad_canary():
    d = ro.judge(
        PLAN, _state(), [_result("error-ratio", 0.0), _result("min-requests", 3)], now=1060
    )
    assert d.kind == ro.WAIT and "min-requests" in d.reason


def test_data_coming_back_clears_the_missing_clock():
    waiting = _state(missing_since=1000.0)
    d = ro.judge(PLAN, waiting, HEALTHY, now=1020)
    assert d.kind == ro.ADVANCE and d.state.missing_since is None


def test_state_round_trips_through_the_tag_and_a_damaged_tag_reads_as_none():
    s = _state(step=1, last=[{"guard": "x"}])
    assert ro.State.from_json(s.to_json()) == s
    assert ro.State.from_json("{not json") is None
    assert ro.State.from_json('{"version": "2"}') is None


def test_a_crash_between_state_and_traffic_tag_is_repaired():
    # state says step 2 (50%), the tag still says 10%: the driver died in between
    d = ro.next_action(PLAN, _state(step=1), ro.Observed("2", "1", "10"), now=1010)
    assert d.kind == ro.SET_TRAFFIC and d.state.percent == 50


def test_manual_changes_win():
    running = _state(step=1)
    by_hand = ro.next_action(PLAN, running, ro.Observed("2", "1", "30"), now=1010)
    assert by_hand.kind == ro.NOTICE and by_hand.state.status == ro.OVERRIDDEN
    assert "30% outside the rollout" in by_hand.reason
    completed = ro.next_action(PLAN, running, ro.Observed(None, "2", None), now=1010)
    assert completed.kind == ro.NOTICE and "became champion outside" in completed.reason
    aborted = ro.next_action(PLAN, running, ro.Observed(None, "1", None), now=1010)
    assert aborted.kind == ro.NOTICE and "removed outside" in aborted.reason
    # a new canary version starts a new rollout
    assert ro.next_action(PLAN, running, ro.Observed("3", "1", "50"), now=1010).kind == ro.START


def test_an_ended_rollout_is_not_restarted():
    done = _state(status=ro.ABORTED)
    assert ro.next_action(PLAN, done, ro.Observed("2", "1", None), now=1010).kind == ro.IDLE
    assert ro.next_action(PLAN, None, ro.Observed(None, "1", None), now=1010).kind == ro.IDLE


@pytest.mark.parametrize("bad", ["", "10,50", "50,10,100", "0,100", "ten,100", "10,10,100"])
def test_bad_steps_are_usage_errors(bad):
    with pytest.raises(UsageError, match="BRIDGE_ROLLOUT_STEPS"):
        ro.parse_steps(bad)


def test_guard_templates_select_the_canary_and_champion_revisions():
    q = gd.render(gd.parse_guards("latency-p95-ratio<=1.2")[0], REV, 90)
    assert 'revision_name="fraud-predictor-00002"' in q
    assert 'revision_name="fraud-predictor-00001"' in q
    assert 'configuration_name="fraud-predictor"' in q and 'namespace_name="ns"' in q
    assert "[90s]" in q
    assert gd.metric_names(q) == {"revision_app_request_latencies_bucket"}
    err = gd.render(gd.parse_guards("error-ratio<0.01")[0], REV, 90)
    assert gd.metric_names(err) == {"revision_app_request_count"}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("error-ratio<<0.01", "is not NAME OP NUMBER"),
        ("no-such-guard<1", "unknown rollout guard 'no-such-guard'"),
        ("error-ratio<0.01,error-ratio<0.02", "named twice"),
    ],
)
def test_bad_guard_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        gd.parse_guards(spec)


def test_custom_guards_file(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text(
        "guards:\n  - name: cpu\n    query: max(rate(cpu_seconds{{{canary}}}[{window}]))\n"
        "    op: '<='\n    threshold: 2\n"
    )
    (g,) = gd.parse_guards("", str(f))
    assert g.describe() == "cpu <= 2"
    assert 'cpu_seconds{namespace_name="ns"' in gd.render(g, REV, 10)
    f.write_text("guards:\n  - name: cpu\n    query: x\n    op: '=='\n    threshold: 2\n")
    with pytest.raises(UsageError, match="op '=='"):
        gd.parse_guards("", str(f))


def test_a_guard_going_bad_while_the_step_bakes_aborts_at_once():
    bad = [_result("error-ratio", 0.3), _result("min-requests", 3)]
    d = ro.watch(PLAN, _state(), bad, now=1010, wait=50)
    assert d.kind == ro.ABORT_NOW and "error-ratio failed" in d.reason
    # thin traffic or no data mid-step is not judged yet
    thin = [_result("error-ratio", None), _result("min-requests", 3)]
    d = ro.watch(PLAN, _state(), thin, now=1010, wait=50)
    assert d.kind == ro.WAIT and d.wait == 50 and d.state.missing_since is None
    assert d.state.last[1]["value"] == 3


def test_a_step_bakes_only_once_the_cluster_serves_it():
    lagging = ro.Observed("2", "1", "50", served_percent=10)
    d = ro.next_action(PLAN, _state(step=1), lagging, now=2000)
    assert d.kind == ro.WAIT and d.state.step_started == 2000
    assert "serve 50% (it serves 10%)" in d.reason
    served = ro.Observed("2", "1", "50", served_percent=50)
    assert ro.next_action(PLAN, d.state, served, now=2059).kind == ro.WAIT
    assert ro.next_action(PLAN, d.state, served, now=2060).kind == ro.EVALUATE


def test_status_table_and_page_show_the_rollout():
    from bridge.status_html import render_html
    from bridge.status_text import format_table

    view = _state(step=1, last=[_result("error-ratio", 0.002).as_dict()]).view(PLAN, now=1020)
    assert view["next_step_in"] == 40 and view["percent"] == 50
    row = {
        "name": "fraud",
        "state": "in_sync",
        "reasons": [],
        "registered": True,
        "alias": "champion",
        "version": "1",
        "canary_alias": "challenger",
        "canary_version": "2",
        "store": None,
        "served": [],
        "sources": [],
        "lineage": {},
        "rollout": view,
    }
    line = "rollout v2: running step 2/3 50%, next check in 40s [error-ratio=0.002]"
    assert line in format_table([row])
    assert line in render_html([row])


def test_standard_mode_is_refused_with_a_clear_error_before_the_cluster_is_asked():
    """Standard mode routes spec.canary through the Gateway API HTTPRoute: no Knative
    revisions and no queue-proxy series exist for the guards (kserve aaac4e29,
    pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go)."""
    from bridge.rollout_driver import KubeRevisions
    from bridge.settings import load_settings

    settings = load_settings(env={"BRIDGE_DEPLOYMENT_MODE": "RawDeployment"})
    with pytest.raises(UsageError, match="Standard mode"):
        KubeRevisions(settings)("churn", {})
    knative = load_settings(env={})
    with pytest.raises(UsageError, match="Standard mode"):
        KubeRevisions(knative)("churn", {"bridge.deployment-mode": "Standard"})
