"""Run the corpus through the CLI in a sealed environment and compare with the expected table.

The sealed environment: a fresh HOME, cwd and TMPDIR in a scratch folder, the planted module's folder on
PYTHONPATH (so an import by name *would* succeed and leave a marker), Hub offline. ``driver.py`` logs every file
opened; :func:`violations` lists reads or writes outside the allowed places.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hostile.registry import IMPORTABLE, Case

HERE = Path(__file__).resolve().parent
UNSAFE_ADVICE = ("weights_only=False", "safe_globals")  # never tell a user to run a refused pickle
REPO = HERE.parents[1]


_LOLCTL_ROOT = str(Path(__import__("lolctl").__file__).resolve().parents[1])


def sealed_env(corpus: Path, work: Path) -> dict[str, str]:
    for sub in ("home", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOLCTL_", "HF_", "PYTHON"))}
    env.update(
        HOME=str(work / "home"),
        TMPDIR=str(work / "tmp"),
        XDG_CACHE_HOME=str(work / "home" / ".cache"),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(work / "home" / "hf"),
        # the corpus's importable folder (nothing may import from it), then the lolctl under test (a worktree's copy
        # when the tests run with PYTHONPATH pointing at one, not the installed one)
        PYTHONPATH=os.pathsep.join([str(corpus / IMPORTABLE), _LOLCTL_ROOT]),
        PYTHONDONTWRITEBYTECODE="1",
        COLUMNS="200",
    )
    return env


def run_driver(runs: list[dict[str, Any]], corpus: Path, work: Path, timeout: int = 30) -> dict[str, Any]:
    """Run ``runs`` ({"id", "argv"}) through driver.py in one sealed subprocess; return its results."""
    work.mkdir(parents=True, exist_ok=True)
    spec, result = work / "runs.json", work / "results.json"
    spec.write_text(json.dumps({"runs": runs, "timeout": timeout}))
    proc = subprocess.run(
        [sys.executable, str(HERE / "driver.py"), str(spec), str(result)],
        cwd=work, env=sealed_env(corpus, work), capture_output=True, text=True,
        timeout=timeout * max(len(runs), 1) + 120,
    )
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"driver failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def run_cli(argv: list[str], corpus: Path, work: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """The real console entry point (`python -m lolctl ...`) in the sealed environment."""
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "lolctl", *argv], cwd=work, env=sealed_env(corpus, work),
                          capture_output=True, text=True, timeout=timeout)


def inspect_runs(cases: list[Case], corpus: Path) -> list[dict[str, Any]]:
    return [{"id": c.name, "argv": ["inspect", str(corpus / c.target), "--format", "json", *c.args]} for c in cases]


def check_inspect(case: Case, run: dict[str, Any]) -> list[str]:
    """Problems with one ``lolctl inspect --format json`` run of ``case`` (empty when it behaved)."""
    problems: list[str] = []
    if run["timed_out"]:
        return ["timed out (hung)"]
    if "Traceback" in run["stderr"]:
        last = [ln for ln in run["stderr"].strip().splitlines() if ln.strip()][-1]
        problems.append(f"traceback: {last[:200]}")
    if any(ch in run["stderr"] for ch in "\x1b\r\x07"):
        problems.append("stderr carries terminal control characters from a file name")
    if run["exit"] != case.exit:
        problems.append(f"exit {run['exit']}, expected {case.exit}")
    try:
        records = json.loads(run["stdout"])["adapters"]
    except (ValueError, KeyError, TypeError):
        return problems + ["stdout is not the inspect JSON document"]
    if len(records) != 1:
        return problems + [f"{len(records)} records, expected 1"]
    rec = records[0]
    if case.kind == "error":
        err = rec.get("error") or {}
        if rec.get("status") != "error" or err.get("code") != case.code:
            got = err.get("code") if rec.get("status") == "error" else f"ok {_codes(rec)}"
            problems.append(f"got {got}, expected {case.code}")
        elif any(bad in err.get("reason", "") + err.get("remedy", "") for bad in UNSAFE_ADVICE):
            problems.append("the message advises loading the pickle unrestricted or allowlisting its globals")
        elif case.name not in err.get("where", ""):
            problems.append(f"message does not name the file: {err.get('where')!r}")
        lines = [ln for ln in run["stderr"].splitlines() if ln.startswith("error[")]
        if len(lines) != 1 or case.code not in lines[0]:
            problems.append(f"stderr has no one-line error[{case.code}] message")
    elif rec.get("status") != "ok":
        problems.append(f"got {rec.get('error', {}).get('code')}, expected a read adapter")
    elif case.kind == "finding" and case.code not in _codes(rec):
        problems.append(f"findings {_codes(rec)}, expected {case.code}")
    return problems


def _codes(rec: dict[str, Any]) -> list[str]:
    return [f["code"] for f in rec.get("findings", [])]


def allowed_roots(corpus: Path, work: Path) -> list[str]:
    paths = {sys.prefix, sys.base_prefix, *sysconfig.get_paths().values(), str(REPO), str(corpus), str(work)}
    paths |= {"/proc", "/sys", "/dev", "/usr", "/lib", "/lib64", "/etc"}
    return sorted(os.path.realpath(p) for p in paths if p)


def violations(results: dict[str, Any], corpus: Path, work: Path, outside: Path) -> list[str]:
    """Opens that a correct lolctl never makes: anything in ``outside``, /etc/passwd, any write outside ``work``,
    any read outside the allowed roots; folders listed in ``outside``."""
    roots = allowed_roots(corpus, work)
    out_real, work_real = os.path.realpath(outside), os.path.realpath(work)

    def under(p: str, root: str) -> bool:
        return p == root or p.startswith(root.rstrip("/") + "/")

    bad = []
    for path, mode in results["opens"]:
        if under(path, out_real) or path == "/etc/passwd":
            bad.append(f"{mode} {path} (forbidden)")
        elif mode == "w" and not under(path, work_real) and path != "/dev/null":
            bad.append(f"w {path} (write outside the scratch folder)")
        elif not any(under(path, r) for r in roots):
            bad.append(f"{mode} {path} (outside the allowed folders)")
    bad += [f"listed {p}" for p in results["listed"] if under(p, out_real)]
    return bad


def markers(outside: Path) -> list[str]:
    return sorted(p.name for p in (outside / "markers").iterdir())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below ``folder``, links not followed."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out
