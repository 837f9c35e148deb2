"""Benchmark: how long each script takes to answer `--help` and to refuse a bad option (no torch before parsing).

Usage: python scripts/benchmark_startup.py [--runs 5]
Prints, per script, the median and the slowest of the runs, and the import time of torch alone as the
baseline that a script importing torch before parsing would pay.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(str(path.relative_to(REPO)) for path in (REPO / "llm").rglob("*.py")
                 if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"))


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default: %(default)s)")
    args = parser.parse_args()
    baseline = [seconds([sys.executable, "-c", "import torch"]) for _ in range(args.runs)]
    print(f"{'command':<58} {'median s':>9} {'max s':>7}")
    label = 'python -c "import torch" (the baseline)'
    print(f"{label:<58} {statistics.median(baseline):>9.2f} {max(baseline):>7.2f}")
    for script in SCRIPTS:
        for what, extra in (("--help", ["--help"]), ("bad option", ["--no-such-option"])):
            times = [seconds([sys.executable, script, *extra]) for _ in range(args.runs)]
            print(f"{script + ' ' + what:<58} {statistics.median(times):>9.2f} {max(times):>7.2f}")


if __name__ == "__main__":
    main()
