"""Run by sslyze's own Python (its virtual environment, see scripts/test): scan a TLS server and judge it against
Mozilla's configuration, as ``sslyze --mozilla_config=NAME`` does. Prints one JSON object: ``{"issues": {...}}``
(empty when compliant), with what was found on the way (``tls_1_2``, ``tls_1_3``, ``curves``).

    python mozilla_check.py HOST PORT intermediate
"""

import json
import sys

from sslyze import Scanner, ServerNetworkLocation, ServerScanRequest
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)

host, port, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
scanner = Scanner()
scanner.queue_scans(
    [ServerScanRequest(ServerNetworkLocation(host, port), scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER)]
)
(result,) = scanner.get_results()
if result.scan_result is None:
    print(json.dumps({"error": f"could not scan: {result.connectivity_error_trace}"}))
    sys.exit(1)
scanned = result.scan_result
found = {
    "tls_1_2": [s.cipher_suite.openssl_name for s in scanned.tls_1_2_cipher_suites.result.accepted_cipher_suites],
    "tls_1_3": [s.cipher_suite.name for s in scanned.tls_1_3_cipher_suites.result.accepted_cipher_suites],
    "curves": [c.name for c in scanned.elliptic_curves.result.supported_curves or []],
}
try:
    check_server_against_tls_configuration(result, MozillaTlsConfiguration.get(TlsConfigurationEnum(config)))
    issues = {}
except ServerNotCompliantWithTlsConfiguration as exc:
    issues = exc.issues
print(json.dumps({"issues": issues, **found}))
