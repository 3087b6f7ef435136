"""`python -m services.chart [--check]`: write the chart's generated files (or, with
--check, fail if any is not what would be written)."""

from __future__ import annotations

import argparse
import sys

from services.chart.generate import CHART_DIR, generated_files


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.chart")
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    stale: list[str] = []
    for relative, content in generated_files().items():
        path = CHART_DIR / relative
        if path.exists() and path.read_text() == content:
            continue
        if args.check:
            stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path}")
    if stale:
        print("stale (run `make gen`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
