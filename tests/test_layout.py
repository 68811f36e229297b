"""The package's shape: folders that show the flow, imports that only point down,
no import circles and no private names taken across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "nvhook"

# Lower floors never import higher ones. Top-level modules are placed by role.
FLOOR = {
    "nvhook": 0, "nvhook.errors": 0, "nvhook.safetext": 0, "nvhook.bounded": 0,
    "nvhook.fileops": 1,
    "nvhook.hookargs": 4,
    "nvhook.oci": 1, "nvhook.gpus": 2, "nvhook.nvidia": 2, "nvhook.kube": 2,
    "nvhook.decision": 3, "nvhook.config": 3, "nvhook.config_schema": 3,
    "nvhook.leases": 4, "nvhook.audit": 4, "nvhook.journal": 4,
    "nvhook.exits": 4, "nvhook.modes": 5, "nvhook.ops": 5, "nvhook.cli": 6,
    "nvhook.entry": 7, "nvhook.__main__": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int:
    best = max((k for k in FLOOR if module == k or module.startswith(k + ".")), key=len)
    return FLOOR[best]


def imports() -> dict[str, set[tuple[str, str, int]]]:
    """module -> {(imported module, imported name or "", line)}, function-level ones too."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    out: dict[str, set[tuple[str, str, int]]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out[mod] |= {(a.name, "", node.lineno) for a in node.names
                             if a.name.startswith("nvhook")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.startswith("nvhook"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    out[mod].add((sub, "", node.lineno) if sub in modules
                                 else (node.module, a.name, node.lineno))
    return out


GRAPH = imports()


def test_flow_folders_exist() -> None:
    for folder in ("oci", "gpus", "nvidia", "decision", "modes", "ops"):
        assert (PKG / folder / "__init__.py").is_file(), folder


def test_no_import_circles() -> None:
    edges = {m: {t for t, _, _ in targets if t in GRAPH and t != m}
             for m, targets in GRAPH.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for t in sorted(edges[m]):
            if seen.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(t):], t]))
            if t not in seen:
                visit(t, [*path, t])
        seen[m] = 2

    for m in sorted(edges):
        if m not in seen:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    for target, _, line in GRAPH[module]:
        if target in GRAPH and target != module and not module.startswith(target + "."):
            assert floor_of(target) <= floor_of(module), (
                f"{module}:{line} imports {target}, which sits above it in the flow")


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_private_names_across_modules(module: str) -> None:
    for target, name, line in GRAPH[module]:
        assert not (name.startswith("_") and not name.startswith("__")), (
            f"{module}:{line} takes the private name {target}.{name}")
