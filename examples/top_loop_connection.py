"""The manual's server: one process per connection.

    top(Port) -> Listen = ssl_socket:listen('STREAM', 'AF_INET', Port, {packet, 2}), loop(Listen).
    loop(Listen) -> Pid = spawn(mymod, connection, [Listen, self()]),
                    receive {Pid, ok} -> loop(Listen) end.
    connection(Listen, Father) -> Socket = ssl_socket:accept(Listen, "-cert ssl_server.pem"),
                                  Father ! {self(), ok},
                                  Socket ! {self(), {deliver, "Hello there"}}, ...

The manual's loop calls itself: Erlang makes that tail call a jump. Python has no tail calls, so
the loop is a ``while``: written as a recursion, this server stopped with RecursionError after 988
connections (Python 3.11, whose default recursion limit is 1,000) and accepted no more.

Run it: python examples/top_loop_connection.py. Three clients connect, each served by its own
process.
"""

import warnings

from _cert import throwaway_certificate

import sslsocket
from sslsocket import receive, self, spawn

SSL_SERVER = throwaway_certificate()
# the example's clients check nothing
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)


def top(port, parent, connections):
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", port), ("packet", 2))
    # (the manual's top knows its port; ours picked a free one)
    parent.send(("listening", listen.port))
    loop(listen, connections)


def loop(listen, connections):
    # the manual's loop runs forever (while True); this one serves a few
    for _ in range(connections):
        pid = spawn(connection, listen, self())
        match receive():
            case (p, "ok") if p is pid:  # receive {Pid, ok} -> loop(Listen) end
                pass
    sslsocket.close(listen)


def connection(listen, father):
    socket = sslsocket.accept(listen, f"-cert {SSL_SERVER}")
    father.send((self(), "ok"))  # the father may now spawn the next acceptor
    socket.send((self(), ("deliver", "Hello there")))
    # until the client leaves, whenever it does: a client may close before it says anything
    while True:
        match receive(lambda m: m[0] is socket):
            case (_, ("fromsocket", data)):
                socket.deliver(f"you said {data!r} to process {self()}")
            case (_, ("socket_closed", _)):  # {Socket, {socket_closed, normal}}, or an error
                return


def main():
    spawn(top, 0, self(), 3)
    _, port = receive(timeout=10)
    for n in range(3):
        client = sslsocket.client("STREAM", "AF_INET", ("localhost", port), ("packet", 2), "")
        print(receive(timeout=10)[1])  # ('fromsocket', 'Hello there')
        client.deliver(f"client {n}")
        print(receive(timeout=10)[1])
        client.close()
    sslsocket.stop()


if __name__ == "__main__":
    main()
