"""CLI start-up: wall and CPU time of short commands, each a fresh process, beside a baseline.

For each command: the median of --runs fresh processes (after one untimed run that fills the
bytecode caches), in a workspace made beforehand (so no run pays for creating its database),
and which heavy libraries the command loaded. The baseline is another version of slmops:
--before REF checks REF out into a temporary git worktree (removed afterwards) and runs the
same commands with PYTHONPATH at its src/; --before PATH uses a src/ folder as it is.

Bytecode caches are used as an installed package uses them: PYTHONDONTWRITEBYTECODE, if the
shell sets it, is dropped for the timed processes unless --no-bytecode.

Run: python bench/bench_cli.py [--before HEAD] [--runs 5] [--no-model] [--no-bytecode]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "transformers",
    "sentence_transformers",
    "llama_cpp",
    "xllamacpp",
    "fastapi",
    "uvicorn",
    "lancedb",
    "pyarrow",
    "pandas",
    "mlflow",
    "alembic",
    "numpy",
    "sqlalchemy",
)
COMMANDS = [
    ["--help"],
    ["trace", "--help"],
    ["trace", "list"],
    ["data", "list"],
    ["model", "list"],
]
KEEP_NO_BYTECODE = False  # --no-bytecode: compile the sources in every run, as without caches
# What the `slmops` script does (pyproject [project.scripts]: slmops.cli.main:main).
RUN = "import sys; sys.argv[0] = 'slmops'; from slmops.cli.main import main; main()"
# The same, reporting on stderr which heavy libraries were loaded when the process ends.
REPORT = (
    "import atexit, json, sys; "
    f"atexit.register(lambda: print('HEAVY=' + json.dumps([m for m in {HEAVY!r} "
    "if m in sys.modules]), file=sys.stderr)); " + RUN
)


def run(
    src: Path, home: Path, args: list[str], code: str = RUN
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src), "SLMOPS_HOME": str(home), "COLUMNS": "120"}
    if not KEEP_NO_BYTECODE:
        # Set in some shells and containers: every run would compile every slmops module
        # again (an installed package has its bytecode; a checkout writes it on first run).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )


def measure(src: Path, home: Path, args: list[str], runs: int) -> tuple[float, float, list[str]]:
    """Median wall and CPU (user + system) seconds of ``runs`` fresh processes, and the heavy
    modules they load. CPU time hardly changes when other work shares the machine; wall
    time does."""
    warm = run(src, home, args, REPORT)
    if warm.returncode != 0:
        raise SystemExit(f"slmops {' '.join(args)} failed ({src}):\n{warm.stderr[-2000:]}")
    heavy = next(
        (json.loads(line[6:]) for line in warm.stderr.splitlines() if line.startswith("HEAVY=")),
        [],
    )
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        run(src, home, args)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus), heavy


@contextlib.contextmanager
def baseline(before: str | None) -> Iterator[Path | None]:
    """The src/ folder of the baseline: a path as given, or REF checked out for the run."""
    if before is None:
        yield None
        return
    if Path(before, "slmops").is_dir():
        yield Path(before).resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="slmops-cli-before-"))
    tree = folder / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), before],
        check=True,
    )
    try:
        yield tree / "src"
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
        )
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="baseline: a git ref (e.g. HEAD) or a src/ folder")
    parser.add_argument("--runs", type=int, default=5, help="timed processes per command")
    parser.add_argument("--no-model", action="store_true", help="skip 'model list' (MLflow)")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE if set (each run then compiles the sources again)",
    )
    options = parser.parse_args()
    global KEEP_NO_BYTECODE
    KEEP_NO_BYTECODE = options.no_bytecode
    commands = [c for c in COMMANDS if not (options.no_model and c[:1] == ["model"])]

    with baseline(options.before) as before_src, tempfile.TemporaryDirectory() as tmp:
        variants = {"after": ROOT / "src"}
        if before_src is not None:
            variants = {"before": before_src, **variants}
        homes = {}
        for name, src in variants.items():
            homes[name] = Path(tmp) / name
            made = run(src, homes[name], ["trace", "list"])  # creates and migrates the database
            if made.returncode != 0:
                raise SystemExit(f"cannot make a workspace with {src}:\n{made.stderr[-2000:]}")

        print(f"slmops CLI start-up: median of {options.runs} fresh processes, seconds")
        bytecode = "off" if KEEP_NO_BYTECODE and os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
            f"{os.getloadavg()[0]:.1f}, bytecode caches {bytecode}"
        )
        header = "".join(
            f"{name + ' ' + kind:>13}" for kind in ("wall", "cpu") for name in variants
        )
        print(f"  {'command':<22}{header}   heavy libraries loaded ({' -> '.join(variants)})")
        for args in commands:
            walls, cpus, loaded = [], [], []
            for name, src in variants.items():
                wall, cpu, heavy = measure(src, homes[name], args, options.runs)
                walls.append(f"{wall:>13.2f}")
                cpus.append(f"{cpu:>13.2f}")
                loaded.append(",".join(heavy) or "-")
            figures = "".join(walls + cpus)
            print(f"  {'slmops ' + ' '.join(args):<22}{figures}   {' -> '.join(loaded)}")


if __name__ == "__main__":
    main()
