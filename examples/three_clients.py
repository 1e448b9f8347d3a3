"""The manual's three client calls, against local servers.

    Socket1 = ssl_socket:client('STREAM', 'AF_INET', {'gin.eua.ericsson.se', 1000}, raw,
                                "-cert client_cert.pem -cert client_key.pem"),
    Socket2 = ssl_socket:client('STREAM', 'AF_INET', {'134.138.99.53', 1002}, asn1,
                                "-cert ssl_client.pem"),
    Socket3 = ssl_socket:client('STREAM', 'AF_INET', {'gin', 1003}, {binary_packet, 4}, ""),

A host name, an IP address, and a short name; a certificate in two files, in one file, and none.

Run it: python examples/three_clients.py
"""

import os
import warnings

from _cert import throwaway_certificate

import sslsocket
from sslsocket import receive, spawn
from sslsocket.certs import make_cert

SSL_SERVER = throwaway_certificate()
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)
HERE = os.path.dirname(SSL_SERVER)
make_cert("a client").write(
    os.path.join(HERE, "client_cert.pem"), os.path.join(HERE, "client_key.pem")
)
make_cert("another client").write(os.path.join(HERE, "ssl_client.pem"))


def echo_server(mode):
    """A server in the given mode that asks for a client certificate (-verify 1) and echoes one
    packet."""
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), mode)

    def serve():
        socket = sslsocket.accept(listen, f"-cert {SSL_SERVER} -verify 1")
        sslsocket.close(listen)
        who = (
            socket.peer_certificate.subject.rfc4514_string()
            if socket.peer_certificate
            else "no certificate"
        )
        print(f"  {mode} server: the client sent {who}")
        while True:  # echo each packet, until the client leaves, whenever it does
            match receive(lambda m: m[0] is socket):
                case (_, ("fromsocket", data)):
                    socket.deliver(data)
                case (_, ("socket_closed", _)):
                    return

    spawn(serve)
    return listen.port


def main():
    port = echo_server("raw")
    socket1 = sslsocket.client(
        "STREAM",
        "AF_INET",
        ("localhost", port),
        "raw",
        f"-cert {HERE}/client_cert.pem -cert {HERE}/client_key.pem",
    )
    port = echo_server("asn1")
    socket2 = sslsocket.client(
        "STREAM", "AF_INET", ("127.0.0.1", port), "asn1", f"-cert {HERE}/ssl_client.pem"
    )
    port = echo_server(("binary_packet", 4))
    socket3 = sslsocket.client("STREAM", "AF_INET", ("localhost", port), ("binary_packet", 4), "")
    socket1.deliver("raw bytes")
    socket2.deliver(bytes.fromhex("0c0548656c6c6f"))  # a BER UTF8String, "Hello"
    socket3.deliver(b"\x00\x01binary")
    for socket in (socket1, socket2, socket3):
        message = receive(lambda m, s=socket: m[0] is s, timeout=10)[1]
        print(f"echo: {message}")  # one string: the servers' processes print meanwhile
        socket.close()
    sslsocket.stop()


if __name__ == "__main__":
    main()
