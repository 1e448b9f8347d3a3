"""A throwaway certificate for the examples.

The manual's ``req -new -x509 -nodes -out ssl_server.pem``.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

from sslsocket.certs import make_cert


def throwaway_certificate(name: str = "ssl_server.pem") -> str:
    """Make a self-signed certificate for localhost (key in the same file), deleted at exit."""
    directory = tempfile.mkdtemp(prefix="sslsocket-example-")
    atexit.register(shutil.rmtree, directory, True)
    path = Path(directory) / name
    make_cert("localhost").write(str(path))
    return str(path)
