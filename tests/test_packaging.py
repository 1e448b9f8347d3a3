"""A package ready to publish: an sdist and a wheel whose metadata carries the license and the classifiers, an
sdist that ships everything its tests need, ``--version``, and helps that speak of their own subcommand only."""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import sslsocket
from sslsocket.cli import EPILOG, build_parser

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_the_wheel_carries_the_license_and_the_classifiers(built: Path) -> None:
    (wheel,) = built.glob("sslsocket-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(archive.read(meta_name))
    assert meta.get("License") == "MIT" or meta.get("License-Expression") == "MIT"
    assert any(n.endswith("licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
    classifiers = meta.get_all("Classifier") or []
    assert "License :: OSI Approved :: MIT License" in classifiers
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "sslsocket/py.typed" in names


def test_the_sdist_ships_everything_its_tests_need(built: Path) -> None:
    (sdist,) = built.glob("sslsocket-*.tar.gz")
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tracked = subprocess.run(
        ["git", "ls-files", "tests", "examples", "docs", "scripts", "LICENSE"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked and not set(tracked) - shipped, set(tracked) - shipped
    assert {"tests/conftest.py", "tests/helpers.py", "tests/interop.py", "tests/peers/JssePeer.java"} <= shipped


def test_version_from_the_installed_metadata() -> None:
    from importlib.metadata import version

    assert sslsocket.__version__ == version("sslsocket")
    result = subprocess.run([sys.executable, "-m", "sslsocket", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == f"sslsocket {sslsocket.__version__}"


def test_each_subcommands_help_speaks_of_it_alone() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    for name, sub in subcommands.items():
        speaks_of_modes = EPILOG.split(":")[0] in sub.format_help()  # "Modes in the manual's notation"
        assert speaks_of_modes == (name in ("serve", "connect")), name
