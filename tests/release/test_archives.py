"""docs/release.md's contract, row by row, on the built archives (listings, checksums, wheels)."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename
from PIL import Image

from routercore.api.dashboard import SCRIPTS
from tests.support import ROOT
from tests.support.release import PYTHONS, VERSION, Release, pip_resolve, run, wheelhouse

pytestmark = pytest.mark.release

DOCS = {"README.md", "README.ja.md", "LICENSE"}


def test_dist_holds_exactly_the_contracted_files(release: Release) -> None:
    names = {p.name for p in release.dist.iterdir()}
    assert names == {
        f"llm_router-{VERSION}.tar.gz",
        release.compiled_wheel.name,
        f"llm_router-{VERSION}-py3-none-any.whl",
        f"llm-router-{VERSION}-linux-x86_64.tar.gz",
        f"llm-router-agent-{VERSION}-windows-x64.zip",
        f"llm-router-agent-{VERSION}-x64.msi",
        "SHA256SUMS",
    }


def test_sha256sums_cover_every_artifact_and_verify(release: Release) -> None:
    listed = {
        line.split(maxsplit=1)[1].lstrip("*")
        for line in (release.dist / "SHA256SUMS").read_text().splitlines()
    }
    assert listed == {p.name for p in release.dist.iterdir()} - {"SHA256SUMS"}
    out = run(["sha256sum", "-c", "SHA256SUMS"], cwd=release.dist).stdout
    assert out.count(": OK") == len(listed)


def test_sdist_carries_the_sources_and_no_build_output(release: Release) -> None:
    names = run(["tar", "-tzf", str(release.sdist)]).stdout.split()
    top = f"llm_router-{VERSION}/"
    assert all(n.startswith(top) for n in names)
    files = {n[len(top) :] for n in names}
    for needed in (
        "ext/balancer.pyx", "ext/wire.pyx", "ext/response_parser.pyx", "routercore/_wire_py.py",
        "setup.py", "pyproject.toml", "MANIFEST.in", "PKG-INFO",
        "README.md", "README.ja.md", "LICENSE",
        "routercore/static/dashboard.html", "routercore/static/dashboard.js",
        "routercore/static/dashboard.css", "routercore/py.typed", "routercore/_balancer_py.py",
        "agent/py.typed", "agent/tray.py",
        "packaging/windows/agent.wxs", "packaging/windows/install.ps1",
        "agent/icons/llm-router.ico", "packaging/linux/install.sh",
    ):  # fmt: skip
        assert needed in files, needed
    for script in SCRIPTS:  # every ES module the page imports
        assert f"routercore/static/{script}" in files, script
    assert not [n for n in files if n.endswith((".c", ".so", ".pyc"))]


def test_compiled_wheel_is_manylinux_and_carries_the_balancer(release: Release) -> None:
    _name, version, _build, tags = parse_wheel_filename(release.compiled_wheel.name)
    assert str(version) == VERSION
    assert all(t.platform.startswith("manylinux") for t in tags), tags  # auditwheel repaired it
    names = run(["unzip", "-Z1", str(release.compiled_wheel)]).stdout.split()
    for module in ("_balancer", "_prefix_index", "_wire", "_response_parser"):
        assert [n for n in names if re.fullmatch(rf"routercore/{module}\..*\.so", n)], module
    for needed in ("routercore/static/dashboard.html", "agent/py.typed", "routercore/cli.py"):
        assert needed in names
    assert {f"routercore/static/{script}" for script in SCRIPTS} <= set(names)
    assert f"llm_router-{VERSION}.dist-info/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(release.compiled_wheel).read(
        f"llm_router-{VERSION}.dist-info/entry_points.txt"
    )
    for script in (b"llm-router =", b"llm-router-agent =", b"llm-router-fakenode ="):
        assert script in entry_points


def test_pure_wheel_has_no_extension_and_no_uvloop_on_windows(release: Release) -> None:
    names = run(["unzip", "-Z1", str(release.pure_wheel)]).stdout.split()
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    assert "routercore/_balancer_py.py" in names and "routercore/static/dashboard.js" in names
    assert "routercore/_wire_py.py" in names
    assert {f"routercore/static/{script}" for script in SCRIPTS} <= set(names)
    metadata = zipfile.ZipFile(release.pure_wheel).read(f"llm_router-{VERSION}.dist-info/METADATA")
    assert b'Requires-Dist: uvloop>=0.19; sys_platform != "win32"' in metadata


def test_linux_bundle_lists_installer_docs_and_wheelhouse(release: Release) -> None:
    listing = run(["tar", "-tvzf", str(release.linux_bundle)]).stdout.splitlines()
    top = f"llm-router-{VERSION}-linux-x86_64/"
    names = {line.split()[-1] for line in listing}
    assert all(n.startswith(top) for n in names)
    files = {n[len(top) :] for n in names}
    assert {"install.sh", *DOCS} <= files
    mode = next(line.split()[0] for line in listing if line.endswith(top + "install.sh"))
    assert mode == "-rwxr-xr-x"
    for own in (
        release.compiled_wheel.name, release.pure_wheel.name, release.sdist.name
    ):  # fmt: skip
        assert f"wheelhouse/{own}" in files


@pytest.mark.parametrize("python", PYTHONS)
def test_linux_wheelhouse_installs_on_each_python(
    linux_bundle: Path, python: str, release: Release
) -> None:
    folder = linux_bundle / "wheelhouse"
    roots = [Requirement("llm-router")]
    roots += wheelhouse.project_requirements(build_deps=True)  # the sdist builds offline too
    target = wheelhouse.Target("manylinux", python)
    assert wheelhouse.check(folder, target, roots) == []
    picked = pip_resolve(folder, python, "manylinux", f"llm-router=={VERSION}")
    own = [p for p in picked if p.startswith("llm_router-")]
    # CPython 3.11 (the interpreter the release was built with) gets the compiled wheel, the
    # others the pure-Python one.
    expected = release.compiled_wheel.name if python == "3.11" else release.pure_wheel.name
    assert own == [expected]
    assert {"uvloop", "apsw", "orjson", "pillow", "psutil", "pystray", "h11", "wsproto"} <= {
        parse_wheel_filename(p)[0] for p in picked
    }


def test_linux_wheels_need_at_most_glibc_2_28(linux_bundle: Path) -> None:
    for wheel in (linux_bundle / "wheelhouse").glob("*.whl"):
        tags = parse_wheel_filename(wheel.name)[3]
        platforms = {t.platform for t in tags}
        if platforms == {"any"}:
            continue
        allowed = set(wheelhouse.PLATFORMS["manylinux"])
        assert platforms & allowed, wheel.name


def test_windows_zip_lists_installer_icon_docs_and_wheels(release: Release) -> None:
    names = run(["unzip", "-Z1", str(release.windows_zip)]).stdout.split()
    top = f"llm-router-agent-{VERSION}-windows-x64/"
    assert all(n.startswith(top) for n in names)
    files = {n[len(top) :] for n in names}
    assert {"install.ps1", "agent.ico", *DOCS} <= files
    wheels = [f[len("wheels/") :] for f in files if f.startswith("wheels/") and f.endswith(".whl")]
    assert release.pure_wheel.name in wheels
    for wheel in wheels:
        platforms = {t.platform for t in parse_wheel_filename(wheel)[3]}
        assert platforms <= {"win_amd64", "any"}, wheel


@pytest.mark.parametrize("python", PYTHONS)
def test_windows_wheels_install_on_each_python(windows_payload: Path, python: str) -> None:
    # pip cannot resolve for Windows from Linux (it reads sys_platform markers off this machine,
    # so it would ask for uvloop): the checker walks the tree with Windows' markers and tags.
    folder = windows_payload / "wheels"
    target = wheelhouse.Target("win_amd64", python)
    assert wheelhouse.check(folder, target, [Requirement("llm-router")]) == []
    tag = f"cp{python.replace('.', '')}"
    for binary in ("apsw", "orjson", "pillow"):
        assert list(folder.glob(f"{binary}-*-{tag}-{tag}-win_amd64.whl")), (binary, python)


def test_icon_is_a_multi_size_ico(windows_payload: Path) -> None:
    # the application icon scripts/make_icons.py draws (agent/icons/llm-router.ico)
    committed = ROOT / "agent" / "icons" / "llm-router.ico"
    assert (windows_payload / "agent.ico").read_bytes() == committed.read_bytes()
    icon = Image.open(windows_payload / "agent.ico")
    assert icon.format == "ICO"
    assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(icon.info["sizes"])


def test_install_ps1_installs_offline_and_starts_the_tray(windows_payload: Path) -> None:
    # PowerShell cannot run here: check the commands it runs against what the agent offers.
    script = (windows_payload / "install.ps1").read_text()
    assert "'--no-index', '--find-links', $Wheels" in script
    assert "Software\\Python\\PythonCore\\$version\\InstallPath" in script
    assert "'-m', 'agent', '--autostart', 'enable'" in script
    assert "Start-Process -FilePath $VenvPythonw -ArgumentList @('-m', 'agent')" in script
    assert "[switch]$Uninstall" in script and "Remove-Item -Recurse -Force $Venv" in script
    # Windows PowerShell 5.1 passes embedded double quotes to native programs unescaped: the
    # Python snippets it runs must not contain any.
    snippets = re.findall(r"-c '([^']*)'", script)
    assert len(snippets) == 3
    assert [s for s in snippets if '"' in s] == []


def test_the_wheelhouse_checker_notices_a_missing_wheel(
    windows_payload: Path, tmp_path: Path
) -> None:
    # the completeness rows above rest on this checker: it must fail when a wheel is missing
    folder = tmp_path / "wheels"
    shutil.copytree(windows_payload / "wheels", folder)
    (pillow_312,) = folder.glob("pillow-*-cp312-cp312-win_amd64.whl")
    pillow_312.unlink()
    root = [Requirement("llm-router")]
    problems = wheelhouse.check(folder, wheelhouse.Target("win_amd64", "3.12"), root)
    assert problems and all(p.startswith("win_amd64 py3.12: no wheel for Pillow") for p in problems)
    assert wheelhouse.check(folder, wheelhouse.Target("win_amd64", "3.13"), root) == []
