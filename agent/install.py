"""Install the runtime when the node has none: download it into the per-user install directory.

An archive (.zip, .tar.gz, .tgz, .tar.xz, .tar.bz2, .tar) is unpacked there; anything else is
taken to be the executable itself. No administrator rights are needed and nothing outside the
install directory is touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.download import Downloader, DownloadError, ProgressCallback, redact_url

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar")


class InstallError(Exception):
    pass


def executable_name(binary: str, platform: str | None = None) -> str:
    platform = platform or sys.platform
    if platform == "win32" and not binary.lower().endswith(".exe"):
        return binary + ".exe"
    return binary


def find_installed(install_dir: Path, binary: str) -> Path | None:
    """The runtime executable inside `install_dir` (searched recursively: archives nest it)."""
    name = executable_name(binary)
    if not install_dir.is_dir():
        return None
    direct = install_dir / name
    if direct.is_file():
        return direct
    downloads = install_dir / "downloads"
    for path in sorted(install_dir.rglob(name), key=lambda p: len(p.parts)):
        if path.is_file() and downloads not in path.parents:
            return path
    return None


def find_runtime(install_dir: Path, binary: str) -> Path | None:
    """An installed runtime: the agent's own install first, then the PATH."""
    found = find_installed(install_dir, binary)
    if found:
        return found
    on_path = shutil.which(binary)
    return Path(on_path) if on_path else None


def _filename(url: str) -> str:
    name = os.path.basename(unquote(urlsplit(url).path))
    return name or "runtime-download"


def _inside(root: Path, target: Path) -> bool:
    root, target = root.resolve(), target.resolve()
    return target == root or root in target.parents


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if not _inside(dest, dest / info.filename):
                raise InstallError(f"{archive.name}: entry {info.filename!r} escapes the directory")
        zf.extractall(dest)
        # zipfile drops Unix permissions; restore the executable bits the archive recorded.
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111:
                os.chmod(dest / info.filename, mode)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            if not _inside(dest, dest / member.name):
                raise InstallError(f"{archive.name}: entry {member.name!r} escapes the directory")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # Python < 3.11.4; members were checked above
            tf.extractall(dest)


def unpack(download: Path, install_dir: Path, binary: str) -> Path:
    """Unpack or place the downloaded file; return the runtime executable."""
    name = download.name.lower()
    try:
        if name.endswith(".zip"):
            _extract_zip(download, install_dir)
        elif name.endswith(ARCHIVE_SUFFIXES):
            _extract_tar(download, install_dir)
        else:
            target = install_dir / executable_name(binary)
            shutil.copyfile(download, target)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise InstallError(f"cannot unpack {download.name}: {exc}") from exc
    found = find_installed(install_dir, binary)
    if found is None:
        raise InstallError(
            f"{download.name} holds no {executable_name(binary)!r}; set runtime_binary to the "
            "name of the runtime's executable"
        )
    if sys.platform != "win32":
        found.chmod(found.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return found


def install_runtime(
    url: str,
    install_dir: Path,
    binary: str,
    downloader: Downloader,
    *,
    sha256: str | None = None,
    sha256_url: str | None = None,
    allow_unverified: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download (resuming if interrupted), verify, unpack. Returns the executable's path.

    Without a checksum (`sha256` or `sha256_url`) the install is refused unless
    `allow_unverified` says the risk is accepted, and then it is logged as a warning: the agent
    would run whatever arrived, so anyone able to alter the download could run code here.
    """
    shown = redact_url(url)
    if not sha256 and not sha256_url:
        if not allow_unverified:
            raise InstallError(
                f"refusing to install the runtime from {shown} without a checksum: set "
                "install_sha256 (or install_sha256_url), or allow_unverified = true to accept "
                "running a download nobody checked"
            )
        log.warning(
            "runtime_install_unverified url=%s risk=%r",
            shown,
            "no SHA-256 to check: whoever can alter this download (a compromised server or "
            "mirror, a proxy, anyone on the path of a plain http:// URL) can run code on this "
            "machine as this user",
        )
    install_dir.mkdir(parents=True, exist_ok=True)
    target = install_dir / "downloads" / _filename(url)
    log.info("runtime_install_start url=%s dir=%s", shown, install_dir)
    try:
        downloader.fetch(url, target, sha256=sha256, sha256_url=sha256_url, progress=progress)
    except DownloadError as exc:
        raise InstallError(f"runtime download failed: {exc}") from exc
    exe = unpack(target, install_dir, binary)
    target.unlink(missing_ok=True)  # unpacked; keep the per-user directory small
    log.info("runtime_installed path=%s", exe)
    return exe
