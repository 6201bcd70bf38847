"""``python -m bench [--quick | --duration S] [--streams N] [--rounds R]``: run the benchmark,
print the table and write ``bench/results/latest.json``. ``--only assistants`` runs the
Assistants step alone (no wrk; ``bench/results/assistants.json``)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from bench import report
from bench.runner import Options, run, run_assistants_only

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
ASSISTANTS_RESULTS = RESULTS.with_name("assistants.json")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM too: unwind through the cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per cell")
    parser.add_argument("--quick", action="store_true", help="3 s per cell")
    parser.add_argument("--streams", type=int, default=1000, help="streams for the memory probe")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every cell, report medians (noisy machines)"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write results")
    parser.add_argument("--only", choices=["assistants"], help="one step alone (no wrk needed)")
    args = parser.parse_args(argv)
    if args.only is None and shutil.which("wrk") is None:
        print("wrk is not installed. Install it with:\n"
              "  apt-get update && apt-get install -y wrk   (or bench/install-wrk.sh)",
              file=sys.stderr)  # fmt: skip
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    opts = Options(
        duration=3.0 if args.quick else args.duration,
        streams=args.streams,
        rounds=max(1, args.rounds),
        quick=args.quick,
    )
    workdir = Path(tempfile.mkdtemp(prefix="ringside-bench-"))
    only = args.only == "assistants"
    json_path = args.json or (ASSISTANTS_RESULTS if only else RESULTS)
    try:
        results = (run_assistants_only if only else run)(opts, workdir)
    except KeyboardInterrupt:
        print(f"interrupted; logs kept in {workdir}", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc}\nlogs kept in {workdir}", file=sys.stderr)
        return 1
    if only:
        results["checks"] = report.assistants_checks(results)
        print(report.render_assistants(results))
    else:
        results["checks"] = report.checks(results)
        print(report.render(results))
    report.write_json(results, json_path)
    print(f"\nresults written to {json_path}")
    shutil.rmtree(workdir, ignore_errors=True)
    failed = any(c["verdict"] != "PASS" for c in results["checks"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
