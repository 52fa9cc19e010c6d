"""Headless Chromium (Debian's /usr/bin/chromium) for tests and benchmarks: a screenshot or the DOM of a
local file, with no network use (no first-run, sync, component updates or background fetches) and a
throw-away profile. Each run's process is waited for and, if it overruns, killed by its pid."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio"]


def available() -> bool:
    return Path(CHROMIUM).exists()


def run(args: list[str], timeout: float = 120) -> bytes:
    """Chromium's stdout for ``args`` (after the fixed flags and a fresh profile)."""
    profile = tempfile.mkdtemp(prefix="topoipam-chromium-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(path: Path, png: Path, width: int = 1000, height: int = 800) -> bytes:
    run([f"--screenshot={png}", f"--window-size={width},{height}", path.resolve().as_uri()])
    return png.read_bytes()


def dump_dom(path: Path) -> str:
    """The document as Chromium parsed and laid it out (``--dump-dom``)."""
    return run(["--dump-dom", path.resolve().as_uri()]).decode()
