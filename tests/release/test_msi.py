"""The Windows agent MSI, inspected with msitools (it cannot be installed here): its tables say
what Windows Installer will do on install and uninstall (docs/release.md, "MSI" rows)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from tests.support.release import VERSION, Release, run

pytestmark = pytest.mark.release


def table(msi: Path, name: str) -> list[dict[str, str]]:
    """`msiinfo export` of one table as rows of column -> value."""
    lines = run(["msiinfo", "export", str(msi), name]).stdout.replace("\r\n", "\n").split("\n")
    columns = lines[0].split("\t")
    # line 1: column types; line 2: table name and keys; then the rows
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in lines[3:] if line]


def extract(msi: Path, stream: str) -> bytes:
    """One binary stream of the MSI (the cabinet, the icon), as `msiinfo extract` writes it."""
    proc = subprocess.run(
        ["msiinfo", "extract", str(msi), stream], capture_output=True, check=True, timeout=60
    )
    return proc.stdout


def cab_files(cab: bytes) -> dict[str, int]:
    """File names and sizes in a cabinet (the MS-CAB header and CFFILE entries)."""
    assert cab[:4] == b"MSCF"
    (coff_files,) = struct.unpack_from("<I", cab, 16)
    (n_files,) = struct.unpack_from("<H", cab, 28)
    out, pos = {}, coff_files
    for _ in range(n_files):
        size = struct.unpack_from("<I", cab, pos)[0]
        end = cab.index(b"\0", pos + 16)
        out[cab[pos + 16 : end].decode()] = size
        pos = end + 1
    return out


@pytest.fixture(scope="module")
def msi(release: Release) -> Path:
    return release.msi


def test_msi_has_the_tables_windows_installer_needs(msi: Path) -> None:
    tables = set(run(["msiinfo", "tables", str(msi)]).stdout.split())
    assert {
        "File", "Component", "Directory", "Feature", "FeatureComponents", "Shortcut", "Registry",
        "Property", "LaunchCondition", "AppSearch", "RegLocator", "CustomAction",
        "InstallExecuteSequence", "Icon", "RemoveFile", "Media",
    } <= tables  # fmt: skip


def test_msi_is_a_per_user_x64_package(msi: Path) -> None:
    info = run(["msiinfo", "suminfo", str(msi)]).stdout
    assert "Template: x64;1033" in info
    # Word Count 10: compressed (2) + no elevation needed (8), as per-user packages are
    assert "Source: 10 " in info
    props = {r["Property"]: r["Value"] for r in table(msi, "Property")}
    assert props["MSIINSTALLPERUSER"] == "1" and "ALLUSERS" not in props
    assert props["ProductVersion"] == VERSION
    assert props["ProductName"] == "LLM Router Agent"
    assert props["ARPPRODUCTICON"] == "agent.ico"
    directories = {r["Directory"]: r for r in table(msi, "Directory")}
    assert directories["INSTALLDIR"]["Directory_Parent"] == "ProgramsDir"
    assert directories["ProgramsDir"]["Directory_Parent"] == "LocalAppDataFolder"


def test_msi_files_are_the_windows_zip_payload(msi: Path, windows_payload: Path) -> None:
    payload = {
        p.relative_to(windows_payload).as_posix(): p.stat().st_size
        for p in windows_payload.rglob("*")
        if p.is_file()
    }
    rows = table(msi, "File")
    assert sorted(r["FileName"] for r in rows) == sorted(Path(n).name for n in payload)
    sizes = {Path(n).name: s for n, s in payload.items()}
    assert {r["FileName"]: int(r["FileSize"]) for r in rows} == sizes
    # the embedded cabinet really holds each file, under its File key, at that size
    in_cab = cab_files(extract(msi, "agent.cab"))
    assert in_cab == {r["File"]: int(r["FileSize"]) for r in rows}


def test_msi_start_menu_shortcut_runs_the_tray_agent_with_the_icon(
    msi: Path, windows_payload: Path
) -> None:
    (shortcut,) = table(msi, "Shortcut")
    assert shortcut["Directory_"] == "ProgramMenuDir"
    assert shortcut["Target"] == "[INSTALLDIR]venv\\Scripts\\pythonw.exe"
    assert shortcut["Arguments"] == "-m agent"
    assert shortcut["Icon_"] == "agent.ico"
    icon = extract(msi, "Icon.agent.ico")
    assert icon == (windows_payload / "agent.ico").read_bytes()
    menu = {r["Directory"]: r for r in table(msi, "Directory")}["ProgramMenuDir"]
    assert menu["Directory_Parent"] == "ProgramMenuFolder"
    # the Start-menu folder goes on uninstall (InstallMode 2)
    removals = table(msi, "RemoveFile")
    assert {"DirProperty": "ProgramMenuDir", "InstallMode": "2"}.items() <= removals[0].items()


def test_msi_start_at_login_is_an_optional_feature_writing_the_run_value(msi: Path) -> None:
    registry = {r["Name"]: r for r in table(msi, "Registry")}
    run_value = registry["LLMRouterAgent"]
    assert run_value["Root"] == "1"  # HKCU
    assert run_value["Key"] == "Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    assert run_value["Value"] == '"[INSTALLDIR]venv\\Scripts\\pythonw.exe" -m agent'
    features = {r["Component_"]: r["Feature_"] for r in table(msi, "FeatureComponents")}
    assert features[run_value["Component_"]] == "StartAtLogin"
    assert {r["Feature"] for r in table(msi, "Feature")} == {"Agent", "StartAtLogin"}
    # every other component (files, shortcut) belongs to the main feature
    assert set(features.values()) == {"Agent", "StartAtLogin"}
    assert [c for c, f in features.items() if f == "StartAtLogin"] == [run_value["Component_"]]


def test_msi_launch_condition_requires_python_3_11_or_newer(msi: Path) -> None:
    (launch,) = [r for r in table(msi, "LaunchCondition") if "PY311USER" in r["Condition"]]
    assert launch["Condition"].startswith("Installed OR ")
    assert "Python 3.11, 3.12 or 3.13 (64-bit)" in launch["Description"]
    assert "python.org" in launch["Description"]
    searches = {r["Signature_"]: r["Property"] for r in table(msi, "AppSearch")}
    locators = {r["Signature_"]: r for r in table(msi, "RegLocator")}
    seen = set()
    for signature, prop in searches.items():
        loc = locators[signature]
        if "PythonCore" not in loc["Key"]:
            continue
        version = loc["Key"].split("\\")[3]
        seen.add((version, {"1": "HKCU", "2": "HKLM"}[loc["Root"]]))
        assert loc["Key"] == f"Software\\Python\\PythonCore\\{version}\\InstallPath"
        assert loc["Name"] == "ExecutablePath"
        assert prop in launch["Condition"].split(" OR ")
    assert seen == {(v, root) for v in ("3.11", "3.12", "3.13") for root in ("HKCU", "HKLM")}


def test_msi_runs_the_offline_install_and_removes_the_venv_on_uninstall(msi: Path) -> None:
    actions = {r["Action"]: r for r in table(msi, "CustomAction")}
    sequence = {r["Action"]: r for r in table(msi, "InstallExecuteSequence")}
    install, remove = actions["OfflineInstall"], actions["RemoveVenv"]
    for action in (install, remove):
        kind = int(action["Type"])
        assert kind & 0x3F == 50  # an exe named by a property (POWERSHELLEXE)
        assert kind & 0x400  # deferred: runs inside the install script
        assert action["Source"] == "POWERSHELLEXE"
        assert '-File "[INSTALLDIR]install.ps1"' in action["Target"]
    # the MSI writes the Run value itself, and starts the agent once the install is committed
    assert install["Target"].endswith("-NoAutostart -NoStart")
    assert remove["Target"].endswith("-Uninstall")
    assert int(install["Type"]) & 0x40 == 0  # a failed install fails the MSI
    seq = {a: int(r["Sequence"]) for a, r in sequence.items()}
    assert seq["InstallFiles"] < seq["OfflineInstall"] < seq["InstallFinalize"]
    assert sequence["OfflineInstall"]["Condition"] == "NOT REMOVE"
    assert seq["RemoveVenv"] < seq["RemoveFiles"]
    assert sequence["RemoveVenv"]["Condition"] == 'REMOVE="ALL"'


def test_msi_upgrades_replace_the_old_version_first(msi: Path) -> None:
    upgrades = {r["ActionProperty"]: r for r in table(msi, "Upgrade")}
    assert upgrades["WIX_UPGRADE_DETECTED"]["VersionMax"] == VERSION  # older versions go
    assert upgrades["WIX_DOWNGRADE_DETECTED"]["VersionMin"] == VERSION  # newer ones refuse
    codes = {r["UpgradeCode"] for r in upgrades.values()}
    props = {r["Property"]: r["Value"] for r in table(msi, "Property")}
    assert codes == {props["UpgradeCode"]}
    seq = {r["Action"]: int(r["Sequence"]) for r in table(msi, "InstallExecuteSequence")}
    # the old product (and its venv) is gone before this one's files and venv are made
    assert seq["InstallValidate"] < seq["RemoveExistingProducts"] < seq["InstallInitialize"]
    launch = {r["Condition"] for r in table(msi, "LaunchCondition")}
    assert "NOT WIX_DOWNGRADE_DETECTED" in launch


def test_msi_starts_the_tray_agent_after_a_fresh_install(msi: Path) -> None:
    actions = {r["Action"]: r for r in table(msi, "CustomAction")}
    sequence = {r["Action"]: r for r in table(msi, "InstallExecuteSequence")}
    set_exe, start = actions["SetAgentExe"], actions["StartAgent"]
    assert int(set_exe["Type"]) == 51  # set a property
    assert set_exe["Source"] == "AGENTEXE"
    assert set_exe["Target"] == "[INSTALLDIR]venv\\Scripts\\pythonw.exe"
    kind = int(start["Type"])
    assert kind & 0x3F == 50 and start["Source"] == "AGENTEXE" and start["Target"] == "-m agent"
    assert kind & 0xC0 == 0xC0  # asynchronous, not waited for: the agent keeps running
    seq = {a: int(r["Sequence"]) for a, r in sequence.items()}
    assert seq["InstallFinalize"] < seq["SetAgentExe"] < seq["StartAgent"]
    assert sequence["StartAgent"]["Condition"] == "NOT Installed"
