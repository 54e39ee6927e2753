"""``python -m bench.proxy --setup``: install what the proxy benchmark needs, idempotently.

- nginx and wrk from Debian: ``apt-get update`` then ``apt-get install -y nginx wrk``, only
  when one of them is missing (needs root).
- HARP 0.8 (``harp-proxy>=0.8,<0.9`` from the package index) in a Python 3.12 venv,
  ``bench/.venv-harp`` by default (git-ignored), created only when it has no HARP 0.8.

Each step says what it did; a step that fails is reported and the others still run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.server import find_wrk

from .services import ROOT, find_nginx

HARP_REQUIREMENT = "harp-proxy>=0.8,<0.9"
DEFAULT_HARP_VENV = ROOT / "bench" / ".venv-harp"
#: HARP 0.8 declares Requires-Python >=3.12,<3.13.
HARP_PYTHON = (3, 12)

Progress = Callable[[str], None]


def _runs_python(candidate: str, version: tuple[int, int]) -> bool:
    try:
        shown = subprocess.run(
            [candidate, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return shown.returncode == 0 and shown.stdout.split() == [str(part) for part in version]


def find_python(version: tuple[int, int] = HARP_PYTHON) -> str | None:
    """Return a Python interpreter of ``version``: on PATH, else one installed by pyenv."""
    name = f"python{version[0]}.{version[1]}"
    candidates = [shutil.which(name), f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version[0]}.{version[1]}*/bin/{name}"))
    for candidate in candidates:
        if candidate and _runs_python(candidate, version):
            return candidate
    return None


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def harp_version(venv: Path) -> str | None:
    """Return the version of harp-proxy installed in ``venv``, or None."""
    python = venv_python(venv)
    if not python.exists():
        return None
    try:
        shown = subprocess.run(
            [
                str(python),
                "-c",
                "from importlib.metadata import version; print(version('harp-proxy'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shown.stdout.strip() if shown.returncode == 0 and shown.stdout.strip() else None


def harp_missing(venv: Path) -> str | None:
    """Return why HARP 0.8 cannot be run from ``venv``, or None when it can."""
    installed = harp_version(venv)
    if installed is None:
        return f"no harp-proxy in {venv} (run `python -m bench.proxy --setup`)"
    if not installed.startswith("0.8."):
        return f"{venv} has harp-proxy {installed}, not 0.8 (run `python -m bench.proxy --setup`)"
    return None


def _run(command: list[str], progress: Progress, timeout: float) -> bool:
    progress("$ " + " ".join(command))
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as ex:
        progress(f"failed: {ex}")
        return False
    if done.returncode != 0:
        progress(f"failed: exit status {done.returncode}")
    return done.returncode == 0


def install_debian_tools(progress: Progress) -> bool:
    """Install nginx and wrk with apt-get unless both are there; return True when they are."""
    if find_nginx() and find_wrk():
        progress("nginx and wrk: already installed")
        return True
    if os.geteuid() != 0:
        progress("nginx or wrk is missing and this is not root: `apt-get install -y nginx wrk`")
        return False
    env_note = "apt may start the system's nginx service (port 80); the bench does not use it"
    progress(f"installing nginx and wrk from Debian ({env_note})")
    if not _run(["apt-get", "update"], progress, timeout=600):
        return False
    _run(["apt-get", "install", "-y", "nginx", "wrk"], progress, timeout=900)
    return bool(find_nginx() and find_wrk())


def install_harp(venv: Path, progress: Progress, python: str | None = None) -> bool:
    """Create ``venv`` with Python 3.12 and install HARP 0.8 there, unless it has it already."""
    if harp_missing(venv) is None:
        progress(f"HARP: harp-proxy {harp_version(venv)} already in {venv}")
        return True
    if not _runs_python(str(venv_python(venv)), HARP_PYTHON):
        python = python or find_python()
        if python is None:
            progress("HARP needs Python 3.12, and none was found (PATH, /usr/bin, pyenv)")
            return False
        if venv.exists():
            progress(f"{venv} is not a Python 3.12 venv: recreating it")
            shutil.rmtree(venv)
        if not _run([python, "-m", "venv", str(venv)], progress, timeout=300):
            return False
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if not _run([*pip, HARP_REQUIREMENT], progress, timeout=1200):
        return False
    missing = harp_missing(venv)
    if missing:
        progress(f"HARP: still missing after the install: {missing}")
        return False
    progress(f"HARP: harp-proxy {harp_version(venv)} installed in {venv}")
    return True


def setup(venv: Path = DEFAULT_HARP_VENV, python: str | None = None) -> int:
    """Install everything; return 0 when all of it is there, 1 otherwise."""

    def progress(message: str) -> None:
        print(f"[bench.proxy setup] {message}", file=sys.stderr, flush=True)

    tools = install_debian_tools(progress)
    harp = install_harp(venv, progress, python)
    return 0 if tools and harp else 1
