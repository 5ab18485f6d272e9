"""`make bench`: run every benchmarks/bench_*.py and print ratios against baselines.

Each module exposes ``run() -> list[dict]``; a row holds at least ``name`` and
either ``ratio`` (baseline / bridge, higher is better) or ``value`` with ``unit``,
plus whatever raw figures explain it. Results also go to benchmarks/results/.
Run a subset: ``python -m benchmarks transfer status``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    modules = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    rows: list[dict] = []
    for name in modules:
        if wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        for row in importlib.import_module(f"benchmarks.{name}").run():
            row.setdefault("benchmark", name.removeprefix("bench_"))
            rows.append(row)
            print("   " + json.dumps(row, sort_keys=True), flush=True)
        print(f"   ({time.monotonic() - started:.1f}s)", flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    print(f"results: {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
