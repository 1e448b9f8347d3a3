"""Every script in examples/ runs with ``python examples/NAME.py``, ends by itself and says what it should."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import sslsocket

from helpers import LOCAL, wait_for

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
    "supervisor": [
        "crashed: ValueError('a bad packet'); the others go on",
        "supervisor: the acceptor crashed (RuntimeError('the acceptor met a bug')); restarting it",
        "alice hears: cut",
        "drain: 2 sockets ended by themselves, 2 cut",
        "carol hears: ('fromsocket', 'GOODBYE')",
        "bob hears: cut",
    ],
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


def load(name: str) -> ModuleType:
    """An example as a module, as ``python examples/NAME.py`` would run it (its ``_cert`` beside it)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.mark.parametrize(
    ("name", "server", "mode"),
    [
        ("top_loop_connection", "connection", ("packet", 2)),
        ("loop_with_stop", "connection", ("packet", 2)),
        ("asn1_example", "server", "asn1"),
    ],
)
def test_an_examples_server_process_ends_when_a_client_leaves_without_a_word(
    name: str, server: str, mode: object
) -> None:
    """Found from the outside: the manual's server kept a thread for every client that closed before it said
    anything (300 such clients, 304 threads): it waited for a packet, then for the close, in that order."""
    example = load(name)
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), mode) as listen:
        for _ in range(3):
            pid = sslsocket.spawn(getattr(example, server), listen, sslsocket.self())
            sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), mode, "").close()
            wait_for(lambda pid=pid: not pid.alive)
