"""The manual's loop that can be stopped: the waiting acceptor is aborted, the listen socket stays
intact.

    loop(Listen) -> Pid = spawn(mymod, connection, [Listen, self()]), loop(Pid, Listen).
    loop(Pid, Listen) -> receive {Pid, ok} -> loop(Listen);
                                 stop -> exit(Pid, abort), exit(normal) end.

"After the code above has received the stop message and exited, there is no error in the Listen
socket. It is still intact and can be used again in a new call to loop/1."

Both loops are one ``while`` here: Python has no tail calls (see top_loop_connection.py).

Run it: python examples/loop_with_stop.py
"""

import time
import warnings

from _cert import throwaway_certificate

import sslsocket
from sslsocket import exit, receive, self, spawn

SSL_SERVER = throwaway_certificate()
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)


def loop(listen):
    while True:
        pid = spawn(connection, listen, self())  # loop(Listen)
        match receive():  # loop(Pid, Listen)
            case (p, "ok") if p is pid:
                continue
            case "stop":
                exit(pid, "abort")  # the acceptor, suspended in accept, raises sslsocket.Exit
                return  # exit(normal)


def connection(listen, father):
    try:
        socket = sslsocket.accept(listen, f"-cert {SSL_SERVER}")
    except sslsocket.Exit as signal:
        print(f"{self()} stopped accepting: exit reason {signal.reason!r}")
        raise  # an uncaught Exit ends the process quietly, as in Erlang
    father.send((self(), "ok"))
    socket.send((self(), ("deliver", "Hello there")))
    # until the client leaves, whenever it does
    receive(lambda m: m[0] is socket and m[1][0] == "socket_closed")


def main():
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    for round_ in (1, 2):  # the same listen socket, used again after a stop
        looper = spawn(loop, listen)
        client = sslsocket.client(
            "STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), ""
        )
        print(f"round {round_}:", receive(timeout=10)[1])
        client.close()
        looper.send("stop")
        while looper.alive:
            time.sleep(0.05)
    sslsocket.close(listen)
    sslsocket.stop()


if __name__ == "__main__":
    main()
