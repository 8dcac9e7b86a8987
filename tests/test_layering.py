"""Layering: node/core is pure; store never reaches the network; nothing imports upward.

Walks every module with `ast`; relative imports are forbidden so every edge is visible here.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "node"
# What each layer may import from outside node (stdlib minus I/O, clock, randomness, threads).
CORE_FORBIDDEN = {
    "os",
    "sys",
    "io",
    "time",
    "datetime",
    "random",
    "secrets",
    "socket",
    "ssl",
    "select",
    "selectors",
    "threading",
    "multiprocessing",
    "concurrent",
    "asyncio",
    "logging",
    "subprocess",
    "signal",
    "shutil",
    "tempfile",
    "pathlib",
    "glob",
    "sqlite3",
    "urllib",
    "http",
    "uuid",
    "plyvel",
    "trio",
    "hypercorn",
    "structlog",
    "pickle",
    "decimal",
    "fractions",
    "math",
}
# node sub-packages each layer may import (node.core.* is open to every layer).
ALLOWED_NODE = {
    "core": {"core"},
    "store": {"core", "store"},
    "chain": {"core", "store", "chain", "lane", "log", "config"},
    "rpc": {"core", "store", "chain", "rpc", "lane", "log", "config"},
    "ops": {"core", "store", "chain", "ops", "log", "config"},
    "lane": set(),  # a leaf: the producer and the RPC share it
    # the read-only pages (issue 16): reads through the rpc tables, the store and ops
    "explorer": {"core", "store", "chain", "rpc", "ops", "client", "log", "lane", "explorer"},
}


def modules() -> list[pathlib.Path]:
    return sorted(ROOT.rglob("*.py"))


def imports_of(path: pathlib.Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(("." * node.level + (node.module or ""), node.lineno))
            else:
                found.append((node.module or "", node.lineno))
    return found


def layer_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_module_respects_its_layer(path: pathlib.Path) -> None:
    layer = layer_of(path)
    for name, line in imports_of(path):
        where = f"{path.relative_to(ROOT.parent)}:{line} imports {name}"
        assert not name.startswith("."), f"{where}: use absolute imports"
        top = name.split(".")[0]
        if top == "node":
            parts = name.split(".")
            if len(parts) > 1 and layer in ALLOWED_NODE:
                assert parts[1] in ALLOWED_NODE[layer], f"{where}: layer {layer} may not"
        elif layer == "core":
            assert top not in CORE_FORBIDDEN, f"{where}: node/core must stay pure"


def test_core_has_no_float_literals() -> None:
    for path in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                raise AssertionError(f"{path}:{node.lineno}: float literal in node/core")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("float", "round"):
                raise AssertionError(f"{path}:{node.lineno}: float()/round() in node/core")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                raise AssertionError(f"{path}:{node.lineno}: true division in node/core")
