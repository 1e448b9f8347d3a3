"""asn1 mode: one whole BER value per message, however TCP and TLS cut the bytes, indefinite length
included.

Run it: python examples/asn1_example.py
"""

import warnings

from _cert import throwaway_certificate

import sslsocket
from sslsocket import receive, self, spawn

SSL_SERVER = throwaway_certificate()
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)

INTEGER_42 = bytes.fromhex("02012a")
SEQUENCE = bytes.fromhex("3006020101020102")  # SEQUENCE { 1, 2 }, definite length
# SEQUENCE { "abc" }, indefinite length (beyond the manual)
INDEFINITE = bytes.fromhex("308004036162630000")


def server(listen, parent):
    socket = sslsocket.accept(listen, f"-cert {SSL_SERVER}")
    while True:  # each value as it comes, until the client leaves, whenever it does
        match receive(lambda m: m[0] is socket):
            case (_, ("fromsocket", value)):
                parent.send(("value", value.encode("latin-1").hex(" ")))
            case (_, ("socket_closed", _)):
                return


def main():
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), "asn1")
    spawn(server, listen, self())
    client = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), "asn1", "")
    # three values in one write, three messages out
    client.deliver(INTEGER_42 + SEQUENCE + INDEFINITE)
    for _ in range(3):
        print("one value:", receive(lambda m: m[0] == "value", timeout=10)[1])
    client.close()
    sslsocket.close(listen)
    sslsocket.stop()


if __name__ == "__main__":
    main()
