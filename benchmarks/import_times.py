"""Import time per top-level package of an engine command, from ``python -X importtime``.

Run: ``python benchmarks/import_times.py [--repeats 3] [--module M] [-- CLI ARGS]``. Without CLI
arguments it times ``from pancreas_ssl_seg.cli import main`` (what every command pays before it
starts), or ``import M`` with ``--module``;
with them (e.g. ``-- segment CT -o OUT --fast``) it runs that command under ``-X importtime``, so
the lazy imports a ``segment`` run triggers are counted too. Prints, per top-level package, the
median over ``--repeats`` runs of the summed self time of its modules (ms), largest first, and
the whole process' wall time.

Two views: ``self`` sums each package's own module time; ``brought_in`` charges a package the
cumulative time of each import of it from outside the package (what it pulled in with it, e.g.
``monai`` bringing ``scipy``), so packages overlap there and the column does not add up.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict

IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\| ( *)(\S+)\s*$")


def times_by_package(importtime_stderr: str) -> tuple[dict[str, float], dict[str, float]]:
    """(self, brought_in) ms keyed by top-level package name (see the module docstring)."""
    rows = [(int(m.group(1)) / 1000.0, int(m.group(2)) / 1000.0, len(m.group(3)),
             m.group(4).split(".")[0])
            for m in map(IMPORT_LINE.match, importtime_stderr.splitlines()) if m]
    own: dict[str, float] = defaultdict(float)
    brought_in: dict[str, float] = defaultdict(float)
    parents: list[tuple[int, str]] = []   # importtime prints a module after what it imported
    for self_ms, cumulative_ms, depth, package in reversed(rows):
        while parents and parents[-1][0] >= depth:
            parents.pop()
        own[package] += self_ms
        if not parents or parents[-1][1] != package:
            brought_in[package] += cumulative_ms
        parents.append((depth, package))
    return dict(own), dict(brought_in)


def run_once(cli_args: list[str], module: str | None = None
             ) -> tuple[dict[str, float], dict[str, float], float]:
    if module:
        code = f"import {module}"
    elif cli_args:
        code = ("import sys; from pancreas_ssl_seg.cli import main; "
                f"sys.exit(main({cli_args!r}))")
    else:
        code = "from pancreas_ssl_seg.cli import main"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True)
    wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return (*times_by_package(done.stderr), wall_s)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--module", default=None, help="time `import MODULE` instead")
    parser.add_argument("cli_args", nargs="*", help="an engine command (after --)")
    args = parser.parse_args(argv)
    runs = [run_once(args.cli_args, args.module) for _ in range(args.repeats)]

    def ranked(view: int) -> dict[str, int]:
        packages = set().union(*(r[view] for r in runs))
        medians = {p: statistics.median(r[view].get(p, 0.0) for r in runs) for p in packages}
        return {p: round(ms) for p, ms in sorted(medians.items(), key=lambda i: -i[1])}

    own = ranked(0)
    print(json.dumps({
        "command": (f"import {args.module}" if args.module else
                    args.cli_args or "from pancreas_ssl_seg.cli import main"),
        "wall_s_median": round(statistics.median(r[2] for r in runs), 2),
        "imports_ms_total": sum(own.values()),
        "self_ms": dict(list(own.items())[:args.top]),
        "brought_in_ms": dict(list(ranked(1).items())[:args.top]),
    }, indent=1))


if __name__ == "__main__":
    main()
