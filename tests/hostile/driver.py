"""Run many ``lolctl`` command lines in one audited process (one torch import instead of one per case).

    python tests/hostile/driver.py RUNS.json RESULTS.json

RUNS.json is ``{"runs": [{"id": str, "argv": [str, ...]}], "timeout": seconds}``. Each run calls the real entry point
``lolctl.cli.main()`` with that argv and records its exit status, stdout, stderr (an escaped exception is written
there as the traceback the real CLI would print) and whether it hit the time limit. A ``sys.addaudithook`` hook logs
every file the process opens (resolved through symlinks, with the mode) and every folder it lists, so a test can
prove that nothing outside the allowed folders was read or written — including by planted code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import traceback

OPENS: list[tuple[str, str]] = []  # (realpath, "r" | "w")
LISTED: list[str] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        if isinstance(path, int) or path is None:
            return
        try:
            real = os.path.realpath(os.fsdecode(path))
        except Exception:  # never let the audit hook break the code under test
            real = repr(path)
        writes = (isinstance(mode, str) and any(ch in mode for ch in "wax+")) or (
            isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        )
        OPENS.append((real, "w" if writes else "r"))
    elif event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        LISTED.append(os.path.realpath(os.fsdecode(args[0])))


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout()


def run_one(argv: list[str], timeout: int) -> dict:
    import lolctl.cli as cli

    out, err = io.StringIO(), io.StringIO()
    status: int | None = 0
    timed_out = False
    sys.argv = ["lolctl", *argv]
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _Timeout:
        timed_out, status = True, None
    except BaseException:  # what the real CLI would print: a traceback, exit 1
        err.write(traceback.format_exc())
        status = 1
    finally:
        signal.alarm(0)
    return {"exit": status, "stdout": out.getvalue(), "stderr": err.getvalue(), "timed_out": timed_out}


def main() -> int:
    spec = json.loads(open(sys.argv[1]).read())
    result_path = sys.argv[2]
    sys.addaudithook(_audit)
    import lolctl.cli as cli

    cli._register()
    cli._register = lambda: None  # main() registers on every call; once is enough in one process
    results = {}
    for run in spec["runs"]:
        results[run["id"]] = run_one(run["argv"], int(spec.get("timeout", 60)))
    with open(result_path, "w") as f:
        json.dump({"runs": results, "opens": sorted(set(OPENS)), "listed": sorted(set(LISTED))}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
