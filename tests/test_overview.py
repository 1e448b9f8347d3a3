"""``sslsocket.i()``: the processes, listen sockets and connections, with what each waits for and has done."""

from __future__ import annotations

import io
from typing import Any

import sslsocket

from helpers import LOCAL, expect, pair, wait_for, waiting_acceptor


def test_i_names_a_connections_peer_owner_and_counters(certs: Any) -> None:
    client, server = pair(("packet", 2), certs=certs)
    for text in ("one", "three"):
        client.deliver(text)
        assert expect(server) == ("fromsocket", text)
    server.deliver("reply")
    assert expect(client) == ("fromsocket", "reply")
    me = sslsocket.self()
    rows = {row.socket: row for row in sslsocket.overview().sockets}
    sent, got = rows[client], rows[server]
    assert sent.peer == f"{LOCAL}:{sslsocket.peername(client).port}" and sent.owner == f"<0.{me.id}.0>"
    assert (sent.packets_out, sent.bytes_out, sent.packets_in, sent.bytes_in) == (2, 2 + 3 + 2 + 5, 1, 2 + 5)
    assert (got.packets_in, got.bytes_in, got.packets_out) == (2, 12, 1)
    assert sent.protocol == "TLSv1.3" and sent.state == "open" and sent.mode == "{packet, 2}" and sent.inbox == 0
    printed = io.StringIO()
    sslsocket.i(printed)
    text = printed.getvalue()
    assert "Sockets: 2" in text and sent.peer in text and f"<0.{me.id}.0>" in text and "TLS_AES" in text
    client.close()
    server.close()


def test_i_shows_what_a_process_waits_in_and_the_listen_socket(certs: Any) -> None:
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "raw")
    pid = waiting_acceptor(listen, f"-cert {certs.server}", sslsocket.Closed)
    wait_for(lambda: any(p.pid is pid and p.waiting.startswith("accept on") for p in sslsocket.overview().processes))
    (row,) = [li for li in sslsocket.overview().listeners if li.port == listen.port]
    assert (row.acceptors, row.quiet, row.handshaking, row.ready, row.mode) == (1, 0, 0, 0, "{packet, 0}")
    me = sslsocket.self()
    me.send("waiting for you")
    (mine,) = [p for p in sslsocket.overview().processes if p.pid is me]
    assert mine.mailbox == 1 and mine.waiting == "-"
    sslsocket.receive(timeout=1)
    sslsocket.close(listen)
    assert sslsocket.receive(timeout=5) == ("accept ended", ("accept", "closed"))
