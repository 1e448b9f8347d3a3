"""The manual's single process handling several sockets, handed over by controlling_process.

    my_accept(ListenFd, User) -> S = ssl_socket:accept(ListenFd, "-cert ssl_server.pem"),
                                 ssl_socket:controlling_process(S, User),
                                 my_accept(ListenFd, User).
    run(Sockets) when list(Sockets) ->
        receive {From, {fromsocket, Bytes}} ->
            case lists:member(From, Sockets) of
                true -> handle_input(Bytes), run(Sockets);          %% old socket
                false -> handle_input(Bytes), run([From|Sockets])   %% new connection
            end; ...

Both are loops here: Python has no tail calls (see top_loop_connection.py).

Run it: python examples/my_accept_run.py
"""

import warnings

from _cert import throwaway_certificate

import sslsocket
from sslsocket import receive, spawn

SSL_SERVER = throwaway_certificate()
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)


def my_accept(listen_fd, user):
    while True:
        s = sslsocket.accept(listen_fd, f"-cert {SSL_SERVER}")
        # nothing that arrived meanwhile is lost in the switch
        sslsocket.controlling_process(s, user)


def handle_input(sender, data, known):
    print(f"{'old socket' if known else 'new connection'}: {data!r}")
    sender.deliver(data.upper())


def run(sockets):
    while True:
        match receive():
            case (sender, ("fromsocket", data)):
                known = sender in sockets
                handle_input(sender, data, known)
                if not known:
                    sockets = [sender, *sockets]  # run([From|Sockets])
            case (sender, ("socket_closed", _)):
                sockets = [s for s in sockets if s is not sender]
            case "stop":
                for socket in sockets:
                    socket.close()
                return


def main():
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    user = spawn(run, [])
    acceptor = spawn(my_accept, listen, user)
    first = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), "")
    second = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), "")
    for client, text in ((first, "one"), (second, "two"), (first, "three")):
        client.deliver(text)
        reply = receive(timeout=10)[1][1]
        print(f"reply: {reply}")  # one string: the run process prints meanwhile
    user.send("stop")
    sslsocket.exit(acceptor, "done")
    sslsocket.close(listen)
    sslsocket.stop()


if __name__ == "__main__":
    main()
