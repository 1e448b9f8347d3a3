"""``SSLKEYLOGFILE`` from the outside: a capture of the demo that ``tshark`` decrypts with the key log, and does
not without it (the capture on ``docs/keylog.rst``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from interop import Peer, need

HELLO = "48 65 6c 6c 6f 20 74 68 65 72 65"  # "Hello there", as tshark prints a decrypted record


def test_tshark_reads_the_demo_with_the_key_log(tmp_path: Path) -> None:
    capture, keys = tmp_path / "demo.pcapng", tmp_path / "keys.log"
    tshark = need("tshark")
    sniffer = Peer([tshark, "-q", "-i", "lo", "-f", "tcp", "-w", str(capture)])
    try:
        sniffer.expect("Capturing on", 30)  # tshark says so once it captures: the demo may begin
        demo = subprocess.run(
            [sys.executable, "-m", "sslsocket", "demo"],
            env={**os.environ, "SSLKEYLOGFILE": str(keys)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert demo.returncode == 0, demo.stderr
        assert "SSLKEYLOGFILE is set" in demo.stderr
    finally:
        sniffer.proc.send_signal(signal.SIGINT)
        sniffer.rest(30)
        sniffer.stop()

    def read(*options: str) -> str:
        return subprocess.run(
            [tshark, "-r", str(capture), *options, "-Y", "tls.app_data"], capture_output=True, text=True, timeout=120
        ).stdout

    assert "Application Data" in read()  # the demo's records are in the capture
    with_keys, without = read("-o", f"tls.keylog_file:{keys}", "-x"), read("-x")
    assert "Decrypted TLS" in with_keys and HELLO in with_keys
    assert "Decrypted TLS" not in without and HELLO not in without
