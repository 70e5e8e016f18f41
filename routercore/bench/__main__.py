"""Command line of the benchmark: run everything once, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from routercore.bench.report import render
from routercore.bench.runner import SECTIONS, Settings, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m routercore.bench",
        description="Start fake nodes, the router and the baselines; measure; print a table.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs (a few minutes), for smoke tests"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the results (default: %(default)s)",
    )
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx baseline")
    parser.add_argument("--sut-cores", default="0", help="taskset cores for the server under test")
    parser.add_argument(
        "--load-cores", default="1", help="taskset cores for the load generator and fake nodes"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma list of sections to run (default: all of %(default)s)",
    )
    parser.add_argument("--keep", type=Path, help="keep logs and configs in this directory")
    args = parser.parse_args(argv)
    sections = tuple(x for x in args.only.split(",") if x)
    if set(sections) - {"balancer", "affinity"} and shutil.which("wrk") is None:
        print("the benchmark needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    kw: dict[str, Any] = {
        "nginx": not args.no_nginx,
        "sut_cores": args.sut_cores if pin else None,
        "load_cores": args.load_cores if pin else None,
        "sections": sections,
    }
    unknown = set(kw["sections"]) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; valid: {','.join(SECTIONS)}")
    settings = Settings.quick(**kw) if args.quick else Settings(**kw)
    results = run(settings, keep=args.keep)
    args.json.write_text(json.dumps(results, indent=2))
    print(render(results))
    print(f"\n(results written to {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
