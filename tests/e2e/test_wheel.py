"""The built wheel is complete: installed on its own, ``tether demo`` migrates, deploys and seeds from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def _run(*args, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done


# uv (which make install installs) builds the wheel with the same build backend as pip, from a build environment
# it keeps, instead of installing setuptools into a new one for every build; pip where there is no uv.
UV = shutil.which("uv", path=str(Path(sys.executable).parent))


def test_the_wheel_carries_migrations_forms_and_processes(tmp_path):
    if UV:
        _run(UV, "build", "--wheel", "--quiet", "--out-dir", str(tmp_path / "dist"), str(ROOT))
    else:
        _run(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path / "dist"))
    [wheel] = (tmp_path / "dist").glob("tether-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    site = Path(
        _run(
            str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    # The dependencies come from this interpreter's site-packages as a plain path (its .pth files, among
    # them the editable install of this checkout, are not read), so only the wheel provides Tether.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = str(venv / "bin" / "python")
    if UV:
        install = [UV, "pip", "install", "--python", python]
    else:
        install = [sys.executable, "-m", "pip", "--python", python, "install"]
    _run(*install, "--no-deps", "-q", str(wheel))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TETHER_") and key != "PYTHONPATH"}
    env.update(
        TETHER_DATABASE_URL=f"sqlite:///{work / 'demo.sqlite3'}",
        TETHER_PASSWORD_HASH_TIME_COST="1",
        TETHER_PASSWORD_HASH_MEMORY_KIB="64",
    )
    where = _run(str(venv / "bin" / "python"), "-c", "import server, engine; print(server.__file__)", cwd=work, env=env)
    assert where.stdout.strip().startswith(str(site)), "Tether is imported from the installed wheel"
    demo = _run(str(venv / "bin" / "tether"), "demo", cwd=work, env=env).stdout
    assert "deployed: autologous_car_t version 1" in demo and "deployed: allogeneic version 1" in demo
    assert "Demo users" in demo
    verify = _run(str(venv / "bin" / "tether"), "audit", "verify", cwd=work, env=env)
    assert "audit chain intact" in verify.stdout + verify.stderr
