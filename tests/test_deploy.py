"""deploy/template-sync.service: the hardening settings, and systemd's own verdict on it.

(deploy/nginx.conf and compose.yaml's nginx are run by tests/test_nginx.py.)
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "template-sync.service"
BINARY = "/opt/template-sync/bin/template-sync"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def install_steps() -> list[str]:
    """The header comment's install commands, one per line."""
    lines = UNIT.read_text().splitlines()
    return [line.removeprefix("#").strip() for line in lines if line.startswith("#   ")]


def test_unit_keeps_its_files_private_and_has_room_for_connections() -> None:
    service = unit()["Service"]
    assert (service["UMask"], service["StateDirectoryMode"]) == ("0077", "0700")
    assert int(service["LimitNOFILE"]) >= 65536


def test_unit_documentation_is_a_file_its_install_steps_create() -> None:
    documentation = unit()["Unit"]["Documentation"]
    assert documentation.startswith("file:///")
    target = documentation.removeprefix("file://")
    assert any(step.split()[-1] == target for step in install_steps() if " install " in f" {step}")


def test_install_steps_create_the_env_files_directory() -> None:
    steps = install_steps()
    step = next(s for s in steps if s.startswith("install ") and "/etc/template-sync/env" in s)
    assert "-D" in step.split() or any("mkdir -p /etc/template-sync" in s for s in steps)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The service's binary is not installed here; everything else is checked as shipped.
    text = UNIT.read_text()
    assert text.count(BINARY) == 2
    (tmp_path / UNIT.name).write_text(text.replace(BINARY, shutil.which("true") or "/bin/true"))
    done = subprocess.run(
        [analyze, "verify", f"./{UNIT.name}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
