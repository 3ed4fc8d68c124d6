"""The wheels the GPU check installs beside a preinstalled torch: ``pip``'s resolution of the project
(plus pytest and pyyaml), followed from what was asked for, leaving out torch, torchvision and what
they require (CUDA libraries, numpy, pillow, ...), which the GPU machine has with its torch; only the
optional extras another package asks of those (fsspec[http]: aiohttp) are carried.
Used by ``benchmarks/gpu_check.sh --download-wheels``.

    python -m benchmarks.gpu_wheels REPORT [PYTHON_VERSION]
    # REPORT: pip install --dry-run --ignore-installed --report's JSON; PYTHON_VERSION: pip's --python-version

prints one ``name==version`` per line, for ``pip download --no-deps -r``, then the project's build
requirements (an offline ``pip install`` of the project builds it from those wheels).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a python with torch but no packaging: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

TORCH = ("torch", "torchvision")


def _requirements(metadata: dict, extras: tuple[str, ...], base: bool, python: dict) -> list[Requirement]:
    """The requirements of a package installed with ``extras`` on the ``python`` of the marker variables
    given: with ``base``, its own too; without, only those its extras add."""
    found = []
    for line in metadata.get("requires_dist") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or marker.evaluate({**python, "extra": ""}):
            if base:
                found.append(requirement)
        elif any(marker.evaluate({**python, "extra": extra}) for extra in extras):
            found.append(requirement)
    return found


def wheels_to_carry(report: dict, python_version: str | None = None) -> list[str]:
    """``name==version`` of each package the install needs that the preinstalled torch does not bring;
    requirements' markers read for ``python_version`` (``3.12``), by default for this python."""
    python = {"python_version": python_version, "python_full_version": f"{python_version}.0"} if python_version else {}
    packages = {canonicalize_name(item["metadata"]["name"]): item for item in report["install"]}
    preinstalled = set(TORCH) | {
        canonicalize_name(r.name)
        for name in TORCH
        for r in _requirements(packages[name]["metadata"], (), base=True, python=python)
    }
    requested = [(name, item) for name, item in packages.items() if item.get("requested")]
    todo = [(name, tuple(item.get("requested_extras") or ())) for name, item in requested]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        base = name not in preinstalled  # a preinstalled package's own requirements are installed with it
        for requirement in _requirements(packages[name]["metadata"], extras, base, python):
            dependency = canonicalize_name(requirement.name)
            if dependency in packages:
                todo.append((dependency, tuple(sorted(requirement.extras))))
    carried = sorted({name for name, _ in seen} - preinstalled - {"lit-transfer"})
    return [f"{name}=={packages[name]['metadata']['version']}" for name in carried]


def build_requirements(pyproject: Path) -> list[str]:
    """``[build-system] requires`` of ``pyproject.toml`` (read without tomllib, which Python 3.10 lacks)."""
    found = re.search(r"\[build-system\][^\[]*?requires\s*=\s*\[([^\]]*)\]", pyproject.read_text())
    return re.findall(r'"([^"]+)"', found.group(1)) if found else []


if __name__ == "__main__":
    carried = wheels_to_carry(json.loads(Path(sys.argv[1]).read_text()), *sys.argv[2:3])
    print("\n".join(carried + build_requirements(Path(__file__).resolve().parents[1] / "pyproject.toml")))
