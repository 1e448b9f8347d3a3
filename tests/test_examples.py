"""Every script in examples/ runs with ``python examples/NAME.py``, ends by itself and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "top_loop_connection": ["('fromsocket', 'Hello there')", "you said 'client 2' to process <Pid"],
    "loop_with_stop": ["round 2: ('fromsocket', 'Hello there')", "stopped accepting: exit reason 'abort'"],
    "my_accept_run": ["new connection: 'two'", "old socket: 'three'", "reply: THREE"],
    "three_clients": [
        "raw server: the client sent CN=a client",
        "asn1 server: the client sent CN=another client",
        "echo: ('fromsocket', b'\\x00\\x01binary')",
    ],
    "chat": ["bob hears: alice: hello, bob", "alice hears: bob: hello, alice"],
    "asn1_example": ["one value: 02 01 2a", "one value: 30 80 04 03 61 62 63 00 00"],
}


def test_every_example_is_listed() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for line in EXPECTED[name]:
        assert line in result.stdout, f"{line!r} not in:\n{result.stdout}"
