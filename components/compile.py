"""Compile every component and the example pipeline to their checked-in YAML.

    python -m components.compile            # (re)write all YAML (make components)
    python -m components.compile --check    # exit 1 if any YAML is out of date
    python -m components.compile --image registry.example/bridge-kfp:0.1.0 --out-dir build/

``--image`` names the image every component runs in (default: the project's
image tagged with the package version); it must be set before the components
are imported, so it is passed on in BRIDGE_COMPONENTS_IMAGE.

Compilation is deterministic: the same sources and the same kfp version give
byte-identical files, which the golden tests check.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (module with the component or pipeline, attribute, output YAML relative to ROOT)
TARGETS = [
    (
        "components.train_and_log.component",
        "train_and_log",
        "components/train_and_log/component.yaml",
    ),
    (
        "components.register_model.component",
        "register_model",
        "components/register_model/component.yaml",
    ),
    ("components.fetch_model.component", "fetch_model", "components/fetch_model/component.yaml"),
    (
        "components.promote_model.component",
        "promote_model",
        "components/promote_model/component.yaml",
    ),
    ("components.deploy_model.component", "deploy_model", "components/deploy_model/component.yaml"),
    ("examples.kfp_pipeline", "pipeline", "examples/kfp_pipeline.yaml"),
]


def compile_one(module: str, attr: str, out: Path | str) -> None:
    from kfp import compiler

    out = Path(out)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    obj = getattr(importlib.import_module(module), attr)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(obj, str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--image", help="image the components run in (pinned tag or digest)")
    parser.add_argument("--out-dir", type=Path, help="write the YAML here instead of in place")
    args = parser.parse_args(argv)
    if args.image:
        from bridge.errors import UsageError
        from bridge.kfp_ops import IMAGE_VARIABLE, check_image_reference

        try:
            check_image_reference(args.image)
        except UsageError as exc:
            print(f"error: {exc.one_line()}", file=sys.stderr)
            return 2
        os.environ[IMAGE_VARIABLE] = args.image
    root = args.out_dir or ROOT
    if args.out_dir:  # the example pipeline loads the components compiled just before it
        os.environ["BRIDGE_COMPONENTS_DIR"] = str(root / "components")
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for module, attr, rel in TARGETS:
            target = root / rel
            if not args.check:
                compile_one(module, attr, target)
                print(f"wrote {rel}")
                continue
            fresh = Path(tmp) / rel
            compile_one(module, attr, fresh)
            if not target.exists() or target.read_bytes() != fresh.read_bytes():
                stale.append(rel)
    for rel in stale:
        print(f"out of date: {rel} (run: make components)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
