"""The manual's top/loop/connection server, two clients, and what ``sslsocket.i()`` shows of them.

``docs/inspect.rst`` shows this file and its output, run when the docs are built (``conf.py``).
"""

import io
import os
import tempfile
import time

import sslsocket
from sslsocket import receive, self, spawn
from sslsocket.certs import make_ca


def loop(listen, cert):
    """The manual's loop: a connection process waits in accept; when it has a client, the next."""
    while True:
        pid = spawn(connection, listen, cert, self())
        receive(lambda m, pid=pid: m == (pid, "ok"))


def connection(listen, cert, father):
    sock = sslsocket.accept(listen, f"-cert {cert}")
    father.send((self(), "ok"))
    while True:
        match receive(lambda m: m[0] is sock):
            case (_, ("fromsocket", data)):
                sock.deliver(data)
            case (_, ("socket_closed", _)):
                return


def main() -> str:
    folder = tempfile.mkdtemp()
    ca, cert = os.path.join(folder, "ca.pem"), os.path.join(folder, "server.pem")
    authority = make_ca("inspect CA")
    authority.write_ca(ca)
    authority.issue("localhost").write(cert)
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    spawn(loop, listen, cert)
    clients = []
    for word in ("hello", "world"):
        address = ("localhost", listen.port)
        sock = sslsocket.client("STREAM", "AF_INET", address, ("packet", 2), f"-verify 2 -CAfile {ca}")
        sock.deliver(word)
        receive(lambda m, sock=sock: m[0] is sock)  # its echo
        clients.append(sock)
    while not sslsocket.overview().listeners[0].acceptors:  # i() is a snapshot: wait for the next acceptor
        time.sleep(0.01)
    out = io.StringIO()
    sslsocket.i(out)
    sslsocket.stop()
    return out.getvalue()


if __name__ == "__main__":
    print(main(), end="")
