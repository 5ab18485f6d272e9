"""The status view as a small read-only HTML page (no JavaScript), for `bridge serve` at `/`.

Every value from the report is escaped: model names, tags and paths come from
users and must never become markup.
"""

from __future__ import annotations

from html import escape

from bridge.status import STATES

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .3rem}
p.summary{margin:.2rem 0 1rem;color:#555}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.reasons{color:#555;font-size:.85rem}
code{font-size:.85rem}
.state{font-weight:600;padding:.1rem .4rem;border-radius:.3rem}
.in_sync{background:#dff5e1;color:#185c22}
.pending{background:#fff4d6;color:#7a5800}
.drifted{background:#ffe2cc;color:#8a3b00}
.broken{background:#fbd5d5;color:#8b1111}
.orphaned{background:#e6e6f5;color:#3a3a7a}
.serving{background:#dff5e1;color:#185c22}
.not_ready{background:#fff4d6;color:#7a5800}
.failed_to_load{background:#fbd5d5;color:#8b1111}
""".strip()

COLUMNS = (
    "Model",
    "State",
    "Serving",
    "Registry",
    "Store",
    "Served",
    "MLflow run",
    "KFP run",
    "Why",
)


def _e(value) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _registry_cell(row: dict) -> str:
    parts = []
    if row.get("version") is not None:
        parts.append(f"{_e(row['alias'])}: v{_e(row['version'])}")
    if row.get("canary_version") is not None:
        parts.append(f"{_e(row['canary_alias'])}: v{_e(row['canary_version'])}")
    if not row.get("registered", True):
        parts.append("not registered")
    if row.get("rollout"):
        from bridge.rollout import describe

        r = row["rollout"]
        parts.append(f'<span class="rollout">rollout v{_e(r["version"])}: {_e(describe(r))}</span>')
    return "<br>".join(parts) or "&ndash;"


def _store_cell(row: dict) -> str:
    s = row.get("store")
    if not s or not s.get("published"):
        return "not published"
    mark = "verified" if s.get("verified") else "FAILED"
    digest = (s.get("digest") or "")[:19]
    return f"v{_e(s['version'])} <code>{_e(digest)}</code> {mark}"


def _served_cell(row: dict) -> str:
    refs = row.get("served") or []
    if not refs:
        return "&ndash;"
    return "<br>".join(f"{_e(r.get('source'))}: v{_e(r.get('version') or '?')}" for r in refs)


def _serving_cell(row: dict) -> str:
    """KServe's word from a live view: serving / not_ready / failed_to_load, and the URL."""
    serving = row.get("serving")
    if not serving:
        return "&ndash;"
    cell = f'<span class="state {_e(serving)}">{_e(serving)}</span>'
    if row.get("url"):
        cell += f'<br><a href="{_e(row["url"])}">{_e(row["url"])}</a>'
    return cell


def _lineage_cell(row: dict, key: str) -> str:
    lineage = row.get("lineage") or {}
    if key == "run_id":
        return f"<code>{_e(lineage.get('run_id'))}</code>" if lineage.get("run_id") else "&ndash;"
    if not lineage.get("kfp_pipeline_run_id"):
        return "&ndash;"
    name = lineage.get("kfp_pipeline_name")
    task = lineage.get("kfp_task_name")
    label = " / ".join(_e(x) for x in (name, task) if x)
    return f"<code>{_e(lineage['kfp_pipeline_run_id'])}</code>" + (f"<br>{label}" if label else "")


def render_html(report: list[dict], *, title: str = "bridge status") -> str:
    counts = {s: 0 for s in STATES}
    for row in report:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = ", ".join(f"{n} {_e(s)}" for s, n in counts.items() if n) or "no managed models"
    serving: dict[str, int] = {}
    for row in report:
        if row.get("serving"):
            serving[row["serving"]] = serving.get(row["serving"], 0) + 1
    if serving:
        summary += "; " + ", ".join(f"{n} {_e(s)}" for s, n in sorted(serving.items()))
    rows = []
    for row in report:
        state = _e(row["state"])
        cells = [
            f"<td>{_e(row['name'])}</td>",
            f'<td><span class="state {state}">{state}</span></td>',
            f"<td>{_serving_cell(row)}</td>",
            f"<td>{_registry_cell(row)}</td>",
            f"<td>{_store_cell(row)}</td>",
            f"<td>{_served_cell(row)}</td>",
            f"<td>{_lineage_cell(row, 'run_id')}</td>",
            f"<td>{_lineage_cell(row, 'kfp')}</td>",
            '<td class="reasons">'
            + "<br>".join(_e(r) for r in [*row.get("reasons", []), *row.get("serving_reasons", [])])
            + (f"<br>canary: {_e(row['canary_state'])}" if row.get("canary_state") else "")
            + "</td>",
        ]
        rows.append(
            f'<tr data-model="{_e(row["name"])}" data-state="{state}">' + "".join(cells) + "</tr>"
        )
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    body = "\n".join(rows) or f'<tr><td colspan="{len(COLUMNS)}">no managed models</td></tr>'
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{_e(title)}</h1>\n"
        f'<p class="summary">{summary} &middot; JSON at <a href="status">status</a></p>\n'
        f'<table id="status"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n'
        "</body></html>\n"
    )
