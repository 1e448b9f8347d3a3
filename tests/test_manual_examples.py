"""Every example of the manual, translated line by line, run against real TLS on 127.0.0.1.

The Erlang is quoted above each translation; the only change is the address: the tests listen on 127.0.0.1 only,
so ``Port`` becomes ``(LOCAL, Port)``.
"""

from __future__ import annotations

from typing import Any

import sslsocket
from sslsocket import exit, receive, self, spawn

from helpers import LOCAL, accepting, expect


def test_listen_example() -> None:
    # ListenSocket = ssl_socket:listen('STREAM', 'AF_INET', 3000, {packet, 2}).
    listen_socket = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2))
    fd, port = listen_socket  # may be bound to {3, 3000}
    assert fd >= 3 and port > 0
    sslsocket.close(listen_socket)


def test_accept_example_and_the_messages(certs: Any) -> None:
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2)) as listen_socket:
        client = spawn(_client_saying, listen_socket.port, self(), "hi")
        # Socket = ssl_socket:accept(ListenSocket, "-cert server_cert.pem -key server_key.pem")
        socket = sslsocket.accept(listen_socket, f"-cert {certs.server_cert} -key {certs.server_key}")
    # Socket ! {self(), {deliver, ByteList}}.  Socket ! {self(), {deliver, Binary}}.
    socket.send((self(), ("deliver", "Hello")))
    socket.send((self(), ("deliver", b"Binary")))
    assert receive(lambda m: m[0] is client, timeout=10) == (client, ["Hello", "Binary"])
    # receive {Socket, {socket_closed, normal}} -> ok; {Socket, {socket_closed, Error}} -> notok;
    #         {Socket, {fromsocket, Bytes}} -> {bytes, Bytes} end.
    match receive(timeout=10):
        case (s, ("socket_closed", "normal")) if s is socket:
            result: Any = "ok"
        case (s, ("socket_closed", _error)) if s is socket:
            result = "notok"
        case (s, ("fromsocket", data)) if s is socket:
            result = ("bytes", data)
    assert result == ("bytes", "hi")
    assert receive(timeout=10) == (socket, ("socket_closed", "normal"))
    # Socket ! {self(), close}.
    socket.send((self(), "close"))


def _client_saying(port: int, parent: sslsocket.Pid, text: str) -> None:
    sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 2), "")
    got = [receive(timeout=10)[1][1] for _ in range(2)]
    sock.deliver(text)
    parent.send((self(), got))
    sock.close()


# top(Port) -> Listen = ssl_socket:listen('STREAM', 'AF_INET', Port, {packet, 2}), loop(Listen).
# loop(Listen) -> Pid = spawn(mymod, connection, [Listen, self()]), receive {Pid, ok} -> loop(Listen) end.
# connection(Listen, Father) -> Socket = ssl_socket:accept(Listen, "-cert ssl_server.pem"),
#     Father ! {self(), ok}, Socket ! {self(), {deliver, "Hello there"}}, .....


def test_top_loop_connection(certs: Any) -> None:
    ssl_server = certs.server
    served: list[sslsocket.Pid] = []

    def top(port: int, parent: sslsocket.Pid, connections: int) -> None:
        listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, port), ("packet", 2))
        parent.send(("listening", listen.port))
        loop(listen, connections)
        sslsocket.close(listen)

    def loop(listen: sslsocket.ListenSocket, connections: int) -> None:
        if connections == 0:  # (the manual's loop runs forever; the test serves three)
            return
        pid = spawn(connection, listen, self())
        served.append(pid)
        match receive():
            case (p, "ok") if p is pid:
                loop(listen, connections - 1)

    def connection(listen: sslsocket.ListenSocket, father: sslsocket.Pid) -> None:
        socket = sslsocket.accept(listen, f"-cert {ssl_server}")
        father.send((self(), "ok"))
        socket.send((self(), ("deliver", "Hello there")))
        receive(lambda m: m[0] is socket and m[1][0] == "socket_closed", timeout=10)

    spawn(top, 0, self(), 3)
    _, port = receive(timeout=10)
    clients = [sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 2), "") for _ in range(3)]
    for client in clients:
        assert expect(client) == ("fromsocket", "Hello there")
        client.close()
    assert len(set(served)) == 3  # a process per connection


# loop(Listen) -> Pid = spawn(mymod, connection, [Listen, self()]), loop(Pid, Listen).
# loop(Pid, Listen) -> receive {Pid, ok} -> loop(Listen); stop -> exit(Pid, abort), exit(normal) end.


def test_loop_with_stop_leaves_the_listen_socket_intact(certs: Any) -> None:
    ssl_server = certs.server
    me = self()

    def loop(listen: sslsocket.ListenSocket) -> None:
        pid = spawn(connection, listen, self())
        loop_pid(pid, listen)

    def loop_pid(pid: sslsocket.Pid, listen: sslsocket.ListenSocket) -> None:
        match receive():
            case (p, "ok") if p is pid:
                loop(listen)
            case "stop":
                exit(pid, "abort")
                return  # exit(normal)

    def connection(listen: sslsocket.ListenSocket, father: sslsocket.Pid) -> None:
        try:
            socket = sslsocket.accept(listen, f"-cert {ssl_server}")
        except sslsocket.Exit as signal:
            me.send(("connection exited", signal.reason))
            raise
        father.send((self(), "ok"))
        socket.send((self(), ("deliver", "Hello there")))
        receive(lambda m: m[0] is socket and m[1][0] == "socket_closed", timeout=10)

    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2))
    looper = spawn(loop, listen)
    client = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("packet", 2), "")
    assert expect(client) == ("fromsocket", "Hello there")
    client.close()
    looper.send("stop")
    assert receive(lambda m: m[0] == "connection exited", timeout=10) == ("connection exited", "abort")
    # "there is no error in the Listen socket. It is still intact and can be used again in a new call to loop/1"
    looper = spawn(loop, listen)
    client = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("packet", 2), "")
    assert expect(client) == ("fromsocket", "Hello there")
    client.close()
    looper.send("stop")
    receive(lambda m: m[0] == "connection exited", timeout=10)
    sslsocket.close(listen)


# my_accept(ListenFd, User) -> S = ssl_socket:accept(ListenFd, "-cert ssl_server.pem"),
#     ssl_socket:controlling_process(S, User), my_accept(ListenFd, User).
# run(Sockets) when list(Sockets) -> receive {From, {fromsocket, Bytes}} ->
#     case lists:member(From, Sockets) of true -> handle_input(Bytes), run(Sockets);
#                                         false -> handle_input(Bytes), run([From|Sockets]) end; ...


def test_my_accept_and_run_one_process_for_several_sockets(certs: Any) -> None:
    ssl_server = certs.server
    me = self()

    def my_accept(listen_fd: sslsocket.ListenSocket, user: sslsocket.Pid) -> None:
        s = sslsocket.accept(listen_fd, f"-cert {ssl_server}")
        sslsocket.controlling_process(s, user)
        my_accept(listen_fd, user)

    def handle_input(data: str, known: bool) -> None:
        me.send(("handled", data, known))

    def run(sockets: list[sslsocket.Socket]) -> None:
        match receive():
            case (frm, ("fromsocket", data)):
                if frm in sockets:  # old socket
                    handle_input(data, True)
                    run(sockets)
                else:  # new connection
                    handle_input(data, False)
                    run([frm, *sockets])
            case "stop":
                for socket in sockets:
                    socket.close()

    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2))
    user = spawn(run, [])
    acceptor = spawn(my_accept, listen, user)
    first = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("packet", 2), "")
    second = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("packet", 2), "")
    first.deliver("one")
    assert receive(timeout=10) == ("handled", "one", False)
    second.deliver("two")
    assert receive(timeout=10) == ("handled", "two", False)
    first.deliver("three")
    assert receive(timeout=10) == ("handled", "three", True)
    user.send("stop")
    assert expect(first) == ("socket_closed", "normal")
    assert expect(second) == ("socket_closed", "normal")
    exit(acceptor, "done")
    sslsocket.close(listen)


# Socket1 = ssl_socket:client('STREAM', 'AF_INET', {'gin.eua.ericsson.se', 1000}, raw,
#                             "-cert client_cert.pem -cert client_key.pem"),
# Socket2 = ssl_socket:client('STREAM', 'AF_INET', {'134.138.99.53', 1002}, asn1, "-cert ssl_client.pem"),
# Socket3 = ssl_socket:client('STREAM', 'AF_INET', {'gin', 1003}, {binary_packet, 4}, ""),


def test_the_three_client_calls(certs: Any, tmp_path: Any) -> None:
    from sslsocket.certs import make_cert

    identity = make_cert("test client")
    client_cert, client_key = tmp_path / "client_cert.pem", tmp_path / "client_key.pem"
    identity.write(str(client_cert), str(client_key))
    ssl_client = certs.client
    server_flags = f"-cert {certs.server} -verify 1 -CAfile {certs.ca}"

    def serve(mode: Any) -> tuple[sslsocket.ListenSocket, Any]:
        listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), mode)
        return listen, accepting(listen, server_flags)

    listen1, accepted1 = serve("raw")
    socket1 = sslsocket.client(
        "STREAM", "AF_INET", ("localhost", listen1.port), "raw", f"-cert {client_cert} -cert {client_key}"
    )
    listen2, accepted2 = serve("asn1")
    socket2 = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen2.port), "asn1", f"-cert {ssl_client}")
    listen3, accepted3 = serve(("binary_packet", 4))
    socket3 = sslsocket.client("STREAM", "AF_INET", ("localhost", listen3.port), ("binary_packet", 4), "")
    servers = [accepted1(), accepted2(), accepted3()]
    for listen in (listen1, listen2, listen3):
        sslsocket.close(listen)
    assert servers[0].peer_certificate is not None  # the client certificate came from the two -cert files
    assert servers[1].verify_result == "ok"
    assert servers[2].peer_certificate is None
    socket1.deliver("raw bytes")
    socket2.deliver(bytes.fromhex("30060201010201020500"))  # a SEQUENCE and a NULL: two values in one write
    socket3.deliver(b"\x00binary")
    got = ""
    while got != "raw bytes":
        got += expect(servers[0])[1]
    assert expect(servers[1]) == ("fromsocket", "\x30\x06\x02\x01\x01\x02\x01\x02")
    assert expect(servers[1]) == ("fromsocket", "\x05\x00")
    assert expect(servers[2]) == ("fromsocket", b"\x00binary")
    for sock in (socket1, socket2, socket3, *servers):
        sock.close()
