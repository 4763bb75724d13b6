"""The tree's rings, enforced: each ring imports only the rings inside it (README, "Layout").

    models/  ->  jano_ref/runtime/  ->  jano_ref/{jano,jit,baselines}/  ->  jano_ref/{combined,generate}.py
             ->  jano_ref/pipelines/  ->  jano_ref/lab/ (and the entry modules)

The methods do not import each other, and no library module imports a test-only reference (diffusers, transformers,
scipy, Pillow). Every import statement counts, including the ones inside functions, so a lazy import cannot hide a
wrong-way dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "jano_ref")
METHODS = ("jano_ref.jano", "jano_ref.jit", "jano_ref.baselines")

# (module prefix, ring); the longest matching prefix wins.
RINGS = (
    ("models", 0),
    ("jano_ref.runtime", 1),
    ("jano_ref.jano", 2),
    ("jano_ref.jit", 2),
    ("jano_ref.baselines", 2),
    ("jano_ref.combined", 3),  # Jano with a step cache on top: composes two methods, so outside them
    ("jano_ref.generate", 3),
    ("jano_ref", 3),  # the package's __init__: the public API over the core
    ("jano_ref.pipelines", 4),
    ("jano_ref.lab", 5),
    ("jano_ref.benchmarks", 5),  # `python -m jano_ref.benchmarks` entry
    ("jano_ref.__main__", 5),  # `python -m jano_ref` entry
)
TEST_ONLY = {"diffusers", "transformers", "scipy", "PIL", "pytest", "hypothesis"}
# The one exception, an optional integration: jano_ref.pipelines.diffusers runs a diffusers pipeline the user already
# holds, and imports diffusers (inside its functions only, checked below) to recognise the pipeline's classes.
# Everything else stays strict.
ALLOWED_REFERENCES = {"jano_ref.pipelines.diffusers": {"diffusers"}}


def ring(module: str) -> int:
    matches = [(len(prefix), r) for prefix, r in RINGS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} is in no ring; add it to RINGS in tests/test_layout.py and to the README")
    return max(matches)[1]


def method_of(module: str) -> str | None:
    return next((m for m in METHODS if module == m or module.startswith(m + ".")), None)


def library_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import a, b: each name may be a module
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def _own(target: str, modules: dict[str, Path]) -> str | None:
    """The library module (or package) an import refers to; None for the standard library and third parties."""
    if target.split(".")[0] not in PACKAGES:
        return None
    while target and target not in modules:  # `from pkg import name` where name is not a module
        target = target.rpartition(".")[0]
    return target or None


MODULES = library_modules()


def test_every_module_is_in_a_ring():
    for module in MODULES:
        ring(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_inward(module):
    here, mine = ring(module), method_of(module)
    problems = []
    for line, target in imports_of(module, MODULES[module]):
        top = target.split(".")[0]
        if top in TEST_ONLY and top not in ALLOWED_REFERENCES.get(module, ()):
            problems.append(f"line {line}: imports {target}, a test-only reference; library code must not")
        own = _own(target, MODULES)
        if own is None:
            continue
        if ring(own) > here:
            problems.append(f"line {line}: imports {own} (ring {ring(own)}) from ring {here}; imports must point "
                            "inward (README, Layout)")
        theirs = method_of(own)
        if mine and theirs and theirs != mine:
            problems.append(f"line {line}: the method {mine} imports the method {theirs}; share code through "
                            "jano_ref.runtime instead")
    assert not problems, f"{module} ({MODULES[module].relative_to(ROOT)}):\n  " + "\n  ".join(problems)


def test_the_rule_catches_a_wrong_way_import(tmp_path):
    """The checker itself can fail: a core module importing the lab is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..lab.eval import bench\n")
    targets = [t for _, t in imports_of("jano_ref.jano.bad", bad)]
    assert targets == ["jano_ref.lab.eval"]
    assert ring(_own(targets[0], MODULES)) > ring("jano_ref.jano.bad")


@pytest.mark.parametrize("module", sorted(ALLOWED_REFERENCES))
def test_allowed_references_are_imported_lazily(module):
    """The allowance is for lazy imports only: importing the module must not need diffusers."""
    top_level = [node for node in ast.parse(MODULES[module].read_text()).body
                 if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module or "" for node in top_level if isinstance(node, ast.ImportFrom) and not node.level}
    assert not {n.split(".")[0] for n in names} & ALLOWED_REFERENCES[module]
