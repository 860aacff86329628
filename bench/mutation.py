"""Run mutmut 3 over one core module with only the tests that belong to it.

mutmut reads its settings from `[tool.mutmut]` in the working directory's pyproject.toml and copies
the tree into `mutants/` there. So that the project's pyproject.toml stays free of per-module
settings, each run gets a scratch directory, `.mutation/<module>/`, holding symlinks to `kai_mesh`
and `tests` and a pyproject.toml that is the project's plus a `[tool.mutmut]` table naming the
one file to mutate and the tests to run. Both directories are in .gitignore.

    .venv/bin/pip install mutmut          # a dev tool: not in the dev extra, not in CI
    nice -n 10 .venv/bin/python bench/mutation.py kai_mesh/core/liveness/membership.py \\
        tests/core/liveness

prints the score (killed / mutants) and the surviving mutant names; inspect one with
`cd .mutation/<module> && ../../.venv/bin/mutmut show <name>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(
    module: str, tests: list[str], rev: str | None, fresh: bool, skip: str | None = None
) -> Path:
    """The scratch directory for `module`: the working tree (symlinked), or `rev` (extracted)."""
    work = ROOT / ".mutation" / Path(module).with_suffix("").as_posix().replace("/", ".")
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("kai_mesh", "tests"):
        path = work / name
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
        if rev is None:
            path.symlink_to(ROOT / name, target_is_directory=True)
    base = (ROOT / "pyproject.toml").read_text()
    if rev is not None:
        archive = subprocess.run(
            ["git", "archive", rev, "kai_mesh", "tests"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        base = subprocess.run(
            ["git", "show", f"{rev}:pyproject.toml"], cwd=ROOT, check=True, capture_output=True
        ).stdout.decode()
    # A mutant that makes the tests take twice as long as the clean run is counted as a timeout
    # (killed): mutmut's default, 15 times, lets an endless simulation run for minutes.
    selection = [*tests, "-k", f"not ({skip})"] if skip else tests
    settings = f"""

[tool.mutmut]
source_paths = ["kai_mesh"]
only_mutate = {_toml_list([module])}
also_copy = ["tests", "pyproject.toml"]
pytest_add_cli_args_test_selection = {_toml_list(selection)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
timeout_multiplier = 2.0
timeout_constant = 2.0
"""
    (work / "pyproject.toml").write_text(base + settings)
    # New or changed tests: have mutmut measure again which tests reach which function.
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    return work


def forget_survivors(work: Path) -> int:
    """Mark every mutant not killed as unchecked, so that the next run tries it again (against
    the tests as they are now); a killed mutant stays killed, as added tests cannot revive it."""
    forgotten = 0
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        for name, code in codes.items():
            if code is not None and _status(code) != "killed":
                codes[name] = None
                forgotten += 1
        meta.write_text(json.dumps(data))
    return forgotten


def run(work: Path, max_children: int) -> tuple[int, int, list[str]]:
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(
        [str(mutmut), "run", "--max-children", str(max_children)], cwd=work, env=env, check=True
    )
    statuses: dict[str, str] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            statuses[name] = _status(code)
    survivors = sorted(f"{n}  ({s})" for n, s in statuses.items() if s != "killed")
    killed = sum(1 for s in statuses.values() if s == "killed")
    return len(statuses), killed, survivors


def _status(code: int | None) -> str:
    from mutmut.stats import status_by_exit_code  # mutmut's own mapping of pytest's exit codes

    status: str = status_by_exit_code[code]
    # A failing test, a timeout or a crash all tell the mutant apart from the real code.
    return "killed" if status in ("killed", "timeout", "segfault") else status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="the one file to mutate, e.g. kai_mesh/core/x.py")
    parser.add_argument("tests", nargs="+", help="the tests to run against each mutant")
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--rev", help="mutate and test this commit instead of the working tree")
    parser.add_argument(
        "--fresh", action="store_true", help="forget earlier results (else only unchecked run)"
    )
    parser.add_argument(
        "--skip", help="a pytest -k expression for slow tests to leave out, e.g. 'hour or six'"
    )
    parser.add_argument(
        "--recheck", action="store_true", help="try the survivors of the last run again"
    )
    args = parser.parse_args()
    work = prepare(args.module, args.tests, args.rev, args.fresh, args.skip)
    if args.recheck:
        print(f"trying {forget_survivors(work)} survivors again")
    total, killed, survivors = run(work, args.max_children)
    score = 100 * killed / total if total else 0.0
    print(f"{args.module}: {total} mutants, {killed} killed, {score:.1f} %")
    for name in survivors:
        print("  survived:", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
