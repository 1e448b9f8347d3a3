"""README.rst: it renders without a warning, and its two set-up commands are there and runnable."""

from __future__ import annotations

import os
from pathlib import Path

import docutils.core
import docutils.writers.null

ROOT = Path(__file__).resolve().parent.parent


def test_readme_renders_cleanly() -> None:
    text = (ROOT / "README.rst").read_text()
    docutils.core.publish_string(
        text, writer=docutils.writers.null.Writer(), settings_overrides={"halt_level": 2, "report_level": 2}
    )


def test_readme_names_the_two_commands_and_they_exist() -> None:
    text = (ROOT / "README.rst").read_text()
    for command in ("scripts/demo", "scripts/test"):
        assert command in text
        assert os.access(ROOT / command, os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_public_name_has_a_docstring() -> None:
    import sslsocket

    for name in sslsocket.__all__:
        assert (getattr(sslsocket, name).__doc__ or "").strip(), name
    for cls in (sslsocket.Socket, sslsocket.Pid, sslsocket.ListenSocket):
        for name, member in vars(cls).items():
            if not name.startswith("_") and (callable(member) or isinstance(member, property)):
                assert (member.__doc__ or "").strip(), f"{cls.__name__}.{name}"
