"""The bounded alias history (pure)."""

from __future__ import annotations

import json

from bridge import history as h


def _e(action, frm, to, alias="champion"):
    return {"action": action, "alias": alias, "from": frm, "to": to}


def test_actor_prefers_ci_variables():
    assert h.actor({"GITHUB_ACTOR": "octo", "GITLAB_USER_LOGIN": "gl"}) == "octo"
    assert h.actor({"GITLAB_USER_LOGIN": "gl"}) == "gl"
    assert h.actor({})  # the OS user


def test_ci_run_url():
    env = {
        "GITHUB_RUN_ID": "42",
        "GITHUB_REPOSITORY": "org/repo",
        "GITHUB_SERVER_URL": "https://ghe.example",
    }
    assert h.ci_run_url(env) == "https://ghe.example/org/repo/actions/runs/42"
    assert (
        h.ci_run_url({"CI_JOB_URL": "https://gitlab.example/j/1"}) == "https://gitlab.example/j/1"
    )
    assert h.ci_run_url({}) is None


def test_entry_fields_and_long_reason():
    e = h.entry(
        "promote",
        "champion",
        "1",
        "2",
        reason="x" * 2000,
        gates={"passed": 3},
        env={"GITHUB_ACTOR": "octo"},
    )
    assert e["actor"] == "octo" and e["from"] == "1" and e["to"] == "2"
    assert len(e["reason"]) == h.MAX_REASON and e["at"].endswith("Z")
    assert "ci_url" not in e


def test_parse_is_forgiving():
    assert h.parse(None) == [] and h.parse("not json") == [] and h.parse('{"entries": 3}') == []
    assert h.parse(json.dumps({"format": 1, "entries": [_e("promote", None, "1"), {"x": 1}]})) == [
        _e("promote", None, "1")
    ]


def test_serialize_trims_oldest_to_fit_both_bounds():
    entries = [dict(_e("promote", str(i), str(i + 1)), reason="r" * 100) for i in range(100)]
    text = h.serialize(entries, max_chars=2000, max_entries=1000)
    assert len(text) <= 2000
    kept = h.parse(text)
    assert kept and kept[-1] == entries[-1] and kept == entries[-len(kept) :]
    assert len(h.parse(h.serialize(entries, max_chars=10**6, max_entries=5))) == 5


def test_append_round_trip():
    text = h.append(None, _e("promote", None, "1"), max_chars=5000, max_entries=10)
    text = h.append(text, _e("promote", "1", "2"), max_chars=5000, max_entries=10)
    assert [e["to"] for e in h.parse(text)] == ["1", "2"]


def test_rollback_walks_back_and_skips_rolled_back_versions():
    entries = [_e("promote", None, "1"), _e("promote", "1", "2"), _e("promote", "2", "3")]
    assert h.rollback_target(entries, "champion", "3") == "2"
    entries.append(_e("rollback", "3", "2"))
    assert h.holders(entries, "champion") == ["1", "2"]
    assert h.rollback_target(entries, "champion", "2") == "1"
    entries.append(_e("rollback", "2", "1"))
    assert h.rollback_target(entries, "champion", "1") is None
    entries.append(_e("promote", "1", "4"))
    assert h.rollback_target(entries, "champion", "4") == "1"


def test_rollback_after_a_manual_move_goes_to_the_last_recorded_holder():
    entries = [_e("promote", None, "1"), _e("promote", "1", "2")]
    assert h.rollback_target(entries, "champion", "9") == "2"
    assert h.rollback_target(entries, "champion", None) == "2"


def test_aliases_are_separate_and_trimmed_history_still_works():
    entries = [_e("promote", "5", "6"), _e("canary", None, "7", alias="challenger")]
    assert h.rollback_target(entries, "champion", "6") == "5"
    assert h.rollback_target(entries, "other", None) is None
