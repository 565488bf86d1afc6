"""Static checks of the CLI's shape: command modules stay thin front-ends that never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[1] / "lolctl" / "cli"
SHARED = {"lolctl.cli", "lolctl.cli.options"}  # the package (main, Ctrl-C handling) and the shared options
NOT_COMMANDS = {"__init__", "options", "commands"}  # commands.py registers the command modules by name


def cli_imports(path: Path) -> set[str]:
    """Every lolctl.cli module a file imports, at module level or inside functions (``from lolctl.cli import x``
    counts as ``lolctl.cli.x`` when ``x`` is a module of the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lolctl.cli")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lolctl.cli"):
            found.add(node.module or "")
            if node.module == "lolctl.cli":
                found |= {f"lolctl.cli.{a.name}" for a in node.names if (CLI / f"{a.name}.py").exists()}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # relative: inside lolctl/cli
            found |= {f"lolctl.cli.{node.module or a.name}" for a in node.names}
    return found


def command_modules() -> list[Path]:
    return sorted(p for p in CLI.glob("*.py") if p.stem not in NOT_COMMANDS)


def test_no_command_module_imports_another():
    offenders = {p.name: sorted(cli_imports(p) - SHARED - {f"lolctl.cli.{p.stem}"}) for p in command_modules()}
    assert len(offenders) >= 7  # score, scan, gate, inspect, diff, train, zoo at least: the check sees them
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lolctl.cli.score import x\n    from lolctl.cli import scan\n"
                   "    from .gate import y\n    import lolctl.cli.inspect\n")
    assert cli_imports(bad) == {"lolctl.cli.score", "lolctl.cli", "lolctl.cli.scan", "lolctl.cli.gate",
                                "lolctl.cli.inspect"}
