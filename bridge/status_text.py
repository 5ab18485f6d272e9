"""The status view as a plain-text table for people (colour only when asked)."""

from __future__ import annotations

import click

_COLOURS = {
    "in_sync": "green",
    "pending": "yellow",
    "drifted": "magenta",
    "broken": "red",
    "orphaned": "cyan",
    "serving": "green",
    "not_ready": "yellow",
    "failed_to_load": "red",
}


def _short(value: str | None, n: int = 12) -> str:
    return "-" if not value else (value if len(value) <= n else value[:n] + "…")


def table_rows(report: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Plain-text cells of the people's table (no colour)."""
    sources = sorted({s for row in report for s in row.get("sources", [])})
    live = any(row.get("serving") for row in report)  # a live view (the cluster) was read
    header = [
        "MODEL",
        "STATE",
        *(["SERVING"] if live else []),
        "REGISTRY",
        "STORE",
        *[s.upper() for s in sources],
        *(["URL"] if live else []),
        "RUN",
        "KFP RUN",
    ]
    rows = []
    for row in report:
        reg = []
        if row.get("version") is not None:
            reg.append(f"{row['alias']}=v{row['version']}")
        if row.get("canary_version") is not None:
            reg.append(f"{row['canary_alias']}=v{row['canary_version']}")
        if not row.get("registered", True):
            reg.append("(not registered)")
        s = row.get("store")
        if s and s.get("published"):
            mark = ("ok" if s["verified"] else "FAILED") + ("" if s["check"] != "sha256" else "*")
            store = f"v{s['version']} {_short((s.get('digest') or '').removeprefix('sha256:'), 8)} {mark}"
        else:
            store = "-"
        served = []
        for source in sources:
            refs = [r for r in row.get("served", []) if r["source"] == source]
            served.append(",".join(f"v{r.get('version') or '?'}" for r in refs) or "-")
        lineage = row.get("lineage") or {}
        kfp = lineage.get("kfp_pipeline_run_id")
        if kfp and lineage.get("kfp_pipeline_name"):
            kfp = f"{_short(kfp)} ({lineage['kfp_pipeline_name']})"
        rows.append(
            [
                row["name"] if row["name"].isprintable() else repr(row["name"]),
                row["state"],
                *([row.get("serving") or "-"] if live else []),
                " ".join(reg) or "-",
                store,
                *served,
                *([row.get("url") or "-"] if live else []),
                _short(lineage.get("run_id")),
                kfp or "-",
            ]
        )
    return header, rows


def format_table(report: list[dict], colour: bool = False) -> str:
    if not report:
        return "no managed models (no model has the approval alias and nothing is served)\n"
    header, rows = table_rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row, cells in zip(report, rows, strict=True):
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        if colour:
            padded[1] = click.style(padded[1], fg=_COLOURS.get(row["state"]), bold=True)
            if header[2] == "SERVING":
                padded[2] = click.style(padded[2], fg=_COLOURS.get(row.get("serving") or ""))
        lines.append("  ".join(padded).rstrip())
        for reason in [*row.get("reasons", []), *row.get("serving_reasons", [])]:
            lines.append(f"    - {reason}")
        if row.get("canary_state"):
            lines.append(f"    canary: {row['canary_state']}")
        if row.get("rollout"):
            from bridge.rollout import describe

            lines.append(f"    rollout v{row['rollout']['version']}: {describe(row['rollout'])}")
    counts: dict[str, int] = {}
    for row in report:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines.append("")
    from bridge.status import STATES

    order = {s: i for i, s in enumerate(STATES)}
    summary = sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order)))
    serving: dict[str, int] = {}
    for row in report:
        if row.get("serving"):
            serving[row["serving"]] = serving.get(row["serving"], 0) + 1
    lines.append(
        ", ".join(f"{n} {s}" for s, n in summary)
        + ("; " + ", ".join(f"{n} {s}" for s, n in sorted(serving.items())) if serving else "")
    )
    return "\n".join(lines) + "\n"
