"""The TLS configuration judged by the tools of the trade: sslyze's check against Mozilla's "intermediate"
configuration, run against ``sslsocket serve`` with an ECDSA and an RSA certificate.

Found from the outside: with an RSA certificate the defaults offered six static-RSA suites (no forward secrecy)
and four CBC-SHA1 ones, in the client's order; with ECDSA, four CBC suites and the X448 and P-521 groups.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from interop import PEERS, sslyze_python

from sslsocket.certs import make_cert
from sslsocket.flags import DEFAULT_CIPHERS

from helpers import LOCAL


@pytest.mark.parametrize("key", ["ec", "rsa"])
def test_serve_meets_mozillas_intermediate_configuration(tmp_path: Path, key: str) -> None:
    cert = tmp_path / "server.pem"
    make_cert("localhost", names=("localhost", LOCAL), key=key).write(str(cert))
    serve = subprocess.Popen(
        [sys.executable, "-m", "sslsocket", "serve", "0", "--host", LOCAL, "--flags", f"-cert {cert}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # sslyze's probes are handshakes that fail on purpose: logged there
        text=True,
    )
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        port = line.split(f"{LOCAL}:")[1].split(",")[0]
        scan = subprocess.run(
            [sslyze_python(), str(PEERS / "mozilla_check.py"), LOCAL, port, "intermediate"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        serve.terminate()
        serve.wait(10)
        if serve.stdout:
            serve.stdout.close()
    assert scan.returncode == 0, scan.stdout + scan.stderr
    report = json.loads(scan.stdout)
    issues = dict(report["issues"])
    issues.pop("certificate_path_validation", None)  # a throwaway certificate that no public CA signed
    assert issues == {}, report
    kind = "ECDSA" if key == "ec" else "RSA"
    assert set(report["tls_1_2"]) == {s for s in DEFAULT_CIPHERS.split(":") if f"-{kind}-" in s}
    assert set(report["curves"]) == {"X25519", "secp256r1", "secp384r1"}
    assert report["tls_1_3"]
