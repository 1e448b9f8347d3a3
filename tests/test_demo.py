"""The README's main job: ``python -m sslsocket demo`` runs on a machine with no files and tells the story."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_plays_the_manuals_scenarios() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sslsocket", "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in [
        "ListenSocket = ssl_socket:listen('STREAM', 'AF_INET', ",
        "received {Pid, ok}",
        'received {Client, {fromsocket, "Hello there"}}',
        'received {Client, {fromsocket, "You said: Good day"}}',
        "received {Socket, {fromsocket, <<0,1,98,105,110,97,114,121>>}}",
        "received {Socket, {fromsocket, [12,5,72,101,108,108,111]}}",
        'received {user_got, "request 2", new_connection}',
        "received {Client1, {socket_closed, normal}}",
        "received {Pid, {accept_aborted, abort}}",
        "i().",
        "Sockets: 2",
        "A new accept on the same ListenSocket works",
        "every socket closed",
    ]:
        assert line in out, f"{line!r} missing from:\n{out}"
    assert result.stderr == ""


def test_usage_errors_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sslsocket", "nonsense"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr
