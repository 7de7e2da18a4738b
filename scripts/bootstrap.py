"""Create the project's virtual environment in ``.venv`` and install the pinned stack.

Run by ``make`` on first use; safe to run again (it does nothing once the stamp file
``.venv/.bootstrap-<hash>`` for the current requirement set exists).

The stack needs four workarounds on Python 3.11 with the CPU build of torch 2.13.
Each is applied here, in one place, so it is easy to remove when upstream catches up:

1. ``norse==1.1.0`` is installed with ``--no-deps``: its declared torchvision dependency
   pulls a CUDA build of torch, and torchvision is only used by ``norse.task``.
2. ``lava-nc==0.10.0`` and ``lava-dl==0.6.0`` are installed with ``--no-deps
   --ignore-requires-python``: both declare Python < 3.11 and lava-dl pins torch < 2.4,
   yet both run on 3.11 with torch 2.13.  Their run-time needs are listed in
   ``requirements.txt`` instead.
3. lava-nc's ``lava/magma/compiler/var_model.py`` uses ``ByteEncoder()`` instances as
   dataclass defaults, which Python 3.11 rejects; they are rewritten to
   ``field(default_factory=ByteEncoder)``.
4. lava-dl's wheel ships a top-level package named ``tests`` into site-packages; it is
   removed so that it can never shadow anything.

torchvision is not installed (PyPI's wheel fails to load beside the CPU torch);
``cnn/x3d.py`` explains how pytorchvideo is imported without it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "requirements.txt"
TORCH_PIN = "torch==2.13.0"
NO_DEPS = ["norse==1.1.0"]
NO_DEPS_ANY_PYTHON = ["lava-nc==0.10.0", "lava-dl==0.6.0"]


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _pip(*args: str) -> None:
    command = [str(_venv_python()), "-m", "pip", "install", "--quiet", *args]
    print("+", " ".join(command[3:]), flush=True)
    subprocess.run(command, check=True)


def _site_packages() -> Path:
    output = subprocess.run(
        [str(_venv_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )
    return Path(output.stdout.strip())


def _patch_lava_dataclass_defaults(site_packages: Path) -> None:
    path = site_packages / "lava" / "magma" / "compiler" / "var_model.py"
    source = path.read_text()
    patched = source.replace(
        ": ByteEncoder = ByteEncoder()", ": ByteEncoder = field(default_factory=ByteEncoder)"
    )
    if patched == source:
        return
    if "from dataclasses import dataclass, InitVar\n" not in patched:
        raise RuntimeError(
            f"{path}: unexpected import line; update the lava-nc patch in scripts/bootstrap.py"
        )
    patched = patched.replace(
        "from dataclasses import dataclass, InitVar\n",
        "from dataclasses import dataclass, field, InitVar\n",
    )
    path.write_text(patched)
    print(f"patched {path}", flush=True)


def _remove_stray_tests_package(site_packages: Path) -> None:
    stray = site_packages / "tests"
    if stray.is_dir() and (stray / "lava").is_dir():
        shutil.rmtree(stray)
        print(f"removed {stray} (shipped by lava-dl's wheel)", flush=True)


def _requirements_hash() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update((ROOT / "pyproject.toml").read_bytes())
    return digest.hexdigest()[:12]


def main() -> int:
    stamp = VENV / f".bootstrap-{_requirements_hash()}"
    if stamp.exists():
        return 0
    if not _venv_python().exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)

    # Pin torch first: an open range would pull a multi-GB CUDA build.
    _pip(TORCH_PIN)
    _pip("-r", str(REQUIREMENTS), TORCH_PIN)
    _pip("--no-deps", *NO_DEPS)
    _pip("--no-deps", "--ignore-requires-python", *NO_DEPS_ANY_PYTHON)
    _pip("--no-deps", "--editable", str(ROOT))

    site_packages = _site_packages()
    _patch_lava_dataclass_defaults(site_packages)
    _remove_stray_tests_package(site_packages)

    for old in VENV.glob(".bootstrap-*"):
        old.unlink()
    stamp.touch()
    print("environment ready:", VENV, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
