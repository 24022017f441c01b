"""A service package imports only ``platform`` and ``contracts``, never another service."""

from __future__ import annotations

import ast
from pathlib import Path

import omnistock

ROOT = Path(omnistock.__file__).parent
SHARED = {"platform", "contracts"}
COMPOSITION = {"cli", "services", "bench", "sim", "__init__"}  # the root may know every service


def service_packages() -> list[str]:
    return sorted(
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in SHARED | COMPOSITION
    )


def omnistock_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "omnistock" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_there_are_service_packages_to_check() -> None:
    assert "demo" in service_packages()


def test_services_import_only_platform_and_contracts() -> None:
    violations = []
    for package in service_packages():
        for module in (ROOT / package).rglob("*.py"):
            for imported in omnistock_imports(module) - SHARED - {package}:
                violations.append(f"{module.relative_to(ROOT)} imports omnistock.{imported}")
    assert violations == []


def test_platform_and_contracts_know_no_service() -> None:
    violations = []
    for package in ("platform", "contracts"):
        for module in (ROOT / package).rglob("*.py"):
            for imported in omnistock_imports(module) - SHARED:
                violations.append(f"{module.relative_to(ROOT)} imports omnistock.{imported}")
    assert violations == []
