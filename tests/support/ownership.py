"""Who touches a table: the package's modules that name it or hold SQL text on it (the tests of
one owner per table: the queue's, the pause's)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import clevertim_sync


def touching(table: str, allowed: set[str], names_it: Callable[[ast.AST], str | None]) -> list[str]:
    """Every module outside `allowed` (paths below the package) that names `table`, as
    `names_it` tells from an AST node (None: not this node), or holds SQL text on it."""
    package = Path(clevertim_sync.__file__).parent
    sql = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+{table}\b", re.IGNORECASE)
    offenders = set()
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        if where in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (why := names_it(node)) is not None:
                offenders.add(f"{where}: {why}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and sql.search(node.value):
                offenders.add(f"{where}: SQL text on {table}")
    return sorted(offenders)
