"""The benchmark runs and prints its table; speed itself is never asserted here (see benchmarks/ and README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_its_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["figure", "unit", "baseline", "sslsocket", "ratio"]
    names = [
        "ping-pong",
        "ping-pong, callback",
        "stream small",
        "stream 16 KiB",
        "stream 1 MiB",
        "handshakes",
        "many connections",
        "several processes",
        "thread hand-off",
    ]
    for name in names:
        assert any(line.startswith(name) for line in lines), name
    data = json.loads(out.read_text())
    assert [f["name"] for f in data["figures"]] == names
    for figure in data["figures"][:6]:
        assert figure["baseline"] and figure["sslsocket"] and figure["ratio"] > 0
    assert "100 of 100 served" in data["figures"][6]["note"]
    assert "CPUs busy" in data["figures"][7]["note"]
    assert data["figures"][8]["sslsocket"][0] > 0
