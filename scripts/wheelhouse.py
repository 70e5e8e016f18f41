"""Wheelhouse tools for scripts/release.sh: which requirements a target needs, and a check that a
folder of wheels holds everything to install llm-router offline on a given Python and platform.

pip download --platform evaluates sys_platform markers for the machine it runs on, not the
target; so the top-level requirements are filtered here, and `check` walks the whole dependency
tree with the target's markers and tags to prove nothing is missing (tests/release use it too).

  python scripts/wheelhouse.py requirements --platform win_amd64 --python 3.12 [--build-deps]
  python scripts/wheelhouse.py check DIR --platform manylinux --python 3.12 [--build-deps]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
# The newest glibc a bundled Linux wheel may need (docs/release.md: "glibc 2.28 or newer").
MANYLINUX_MAX_GLIBC = 28
PLATFORMS = {
    "manylinux": [f"manylinux_2_{m}_x86_64" for m in range(MANYLINUX_MAX_GLIBC, 4, -1)]
    + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"],
    "win_amd64": ["win_amd64"],
}
ENVIRONMENTS = {
    "manylinux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "win_amd64": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
}


@dataclass(frozen=True)
class Target:
    platform: str  # a key of PLATFORMS
    python: str  # "3.12"

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")
        return int(major), int(minor)

    def environment(self) -> dict[str, str]:
        return {
            **ENVIRONMENTS[self.platform],
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "platform_machine": "AMD64" if self.platform == "win_amd64" else "x86_64",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "extra": "",
        }

    def tags(self) -> set[Tag]:
        platforms = PLATFORMS[self.platform]
        return set(cpython_tags(self.version, platforms=platforms)) | set(
            compatible_tags(self.version, f"cp{self.version[0]}{self.version[1]}", platforms)
        )

    def wants(self, requirement: Requirement) -> bool:
        return requirement.marker is None or requirement.marker.evaluate(self.environment())


def project_requirements(build_deps: bool) -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = list(pyproject["project"]["dependencies"])
    if build_deps:
        names += pyproject["build-system"]["requires"]
    return [Requirement(n) for n in names]


def requirements(target: Target, build_deps: bool) -> list[str]:
    """The project's requirements that apply on `target`, markers dropped (pip reads them wrong)."""
    out = []
    for req in project_requirements(build_deps):
        if target.wants(req):
            out.append(f"{req.name}{req.specifier}")
    return out


def _metadata_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(zf.read(name).decode())
    return [Requirement(r) for r in headers.get_all("Requires-Dist") or []]


def check(folder: Path, target: Target, roots: list[Requirement]) -> list[str]:
    """Every requirement reachable from `roots` on `target` has a wheel in `folder` for it."""
    tags = target.tags()
    wheels: dict[str, list[tuple[Path, str]]] = {}
    for path in folder.glob("*.whl"):
        name, version, _build, wheel_tags = parse_wheel_filename(path.name)
        if wheel_tags & tags:
            wheels.setdefault(canonicalize_name(name), []).append((path, str(version)))
    problems: list[str] = []
    seen: set[str] = set()
    todo = [r for r in roots if target.wants(r)]
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        candidates = wheels.get(key, [])
        fits = [(p, v) for p, v in candidates if req.specifier.contains(v, prereleases=True)]
        if not fits:
            problems.append(f"{target.platform} py{target.python}: no wheel for {req}")
            continue
        if key in seen:
            continue
        seen.add(key)
        for path, _version in fits[:1]:
            todo += [r for r in _metadata_requirements(path) if target.wants(r)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("requirements", "check"):
        p = sub.add_parser(name)
        if name == "check":
            p.add_argument("folder", type=Path)
        p.add_argument("--platform", choices=sorted(PLATFORMS), required=True)
        p.add_argument("--python", required=True)
        p.add_argument("--build-deps", action="store_true", help="setuptools, wheel, Cython too")
    args = parser.parse_args(argv)
    target = Target(args.platform, args.python)
    if args.command == "requirements":
        print("\n".join(requirements(target, args.build_deps)))
        return 0
    roots = [Requirement("llm-router")]
    if args.build_deps:
        roots += project_requirements(build_deps=True)
    problems = check(args.folder, target, roots)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
