"""``python -m bench [--quick | --duration S] [--streams N] [--rounds R]``: run the benchmark,
print the table and write ``bench/results/latest.json``. ``--only assistants`` runs the
Assistants step alone (no wrk; ``bench/results/assistants.json``), ``--only adapters`` the
adapters step (``bench/results/adapters.json``)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from bench import report
from bench.runner import Options, run, run_adapters_only, run_assistants_only

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
ASSISTANTS_RESULTS = RESULTS.with_name("assistants.json")
ADAPTERS_RESULTS = RESULTS.with_name("adapters.json")


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
    parser.add_argument(
        "--only", choices=["assistants", "adapters"], help="one step alone (assistants: no wrk)"
    )
    args = parser.parse_args(argv)
    if args.only != "assistants" and shutil.which("wrk") is None:
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
    only = args.only is not None
    steps = {"assistants": (run_assistants_only, ASSISTANTS_RESULTS),
             "adapters": (run_adapters_only, ADAPTERS_RESULTS)}  # fmt: skip
    runner, default_json = steps[args.only] if args.only else (run, RESULTS)
    json_path = args.json or default_json
    try:
        results = runner(opts, workdir)
    except KeyboardInterrupt:
        print(f"interrupted; logs kept in {workdir}", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc}\nlogs kept in {workdir}", file=sys.stderr)
        return 1
    if only:
        results["checks"] = report.step_checks(results)
        print(report.render_step(results))
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
