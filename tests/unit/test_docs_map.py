"""The map inside the house stays true: docs/architecture.md places every module, docs/api.md
names every route and every setting, and README links only files a clone has."""

from __future__ import annotations

import re

from routercore.config import RouterConfig, settings
from routercore.service import RouterService
from tests.support import ROOT

ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
API = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
HEADING = re.compile(r"^#{2,3} (?:`([\w/]+/)`)?.*$", re.M)
ROW_PATHS = re.compile(r"^\| ([^|]+) \|", re.M)


def placed_paths() -> set[str]:
    """Every path the architecture tables name, made relative to the repository root."""
    placed: set[str] = set()
    headings = list(HEADING.finditer(ARCHITECTURE))
    for i, heading in enumerate(headings):
        folder = heading.group(1)
        if folder is None:
            continue
        end = headings[i + 1].start() if i + 1 < len(headings) else len(ARCHITECTURE)
        for cell in ROW_PATHS.findall(ARCHITECTURE[heading.end() : end]):
            for name in re.findall(r"`([^`]+)`", cell):
                placed.add(folder + name)
    return placed


def source_files() -> list[str]:
    found = []
    for top, pattern in (("routercore", "*.py"), ("agent", "*.py"), ("ext", "*.pyx")):
        found += [p.relative_to(ROOT).as_posix() for p in (ROOT / top).rglob(pattern)]
    found += [p.relative_to(ROOT).as_posix() for p in (ROOT / "routercore/static").glob("*.js")]
    # An empty package marker owns nothing.
    return sorted(f for f in found if (ROOT / f).read_text(encoding="utf-8").strip())


def test_architecture_places_every_module() -> None:
    placed = placed_paths()
    missing = [f for f in source_files() if f not in placed]
    assert not missing, f"docs/architecture.md does not place: {missing}"


def test_architecture_names_no_module_that_is_gone() -> None:
    gone = [p for p in placed_paths() if p.endswith((".py", ".pyx", ".js"))]
    gone = [p for p in gone if not (ROOT / p).exists()]
    assert not gone, f"docs/architecture.md places modules that do not exist: {gone}"


def test_api_names_every_route() -> None:
    service = RouterService(RouterConfig(db=":memory:", port=0))
    routes = sorted(
        (method, path) for path, methods in service.app.paths.items() for method in methods
    )
    assert len(routes) > 40
    missing = [f"{m} {p}" for m, p in routes if f"{m} {p}" not in API and f"`{p}`" not in API]
    assert not missing, f"docs/api.md does not name: {missing}"


def test_api_names_every_setting() -> None:
    missing = [f.name for f in settings() if f"LLM_ROUTER_{f.name.upper()}" not in API]
    assert not missing, f"docs/api.md does not document the settings: {missing}"


def test_readme_links_only_files_in_the_repository() -> None:
    for readme in ("README.md", "README.ja.md"):
        text = (ROOT / readme).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path = (ROOT / target).resolve()
            assert path.is_relative_to(ROOT), f"{readme} links outside the repository: {target}"
            assert path.exists(), f"{readme} links a missing file: {target}"
