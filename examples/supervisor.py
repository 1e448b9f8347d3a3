"""The manual's top/loop/connection, kept running by a supervisor, as OTP keeps an Erlang server.

    supervisor: process_flag(trap_exit, true), Acceptor = spawn_link(loop, [Listen]), then for
                each {'EXIT', Acceptor, Reason}: restart it (one-for-one), at most MAX_RESTARTS
                in WITHIN seconds.
    loop:       the manual's, trapping exits, with spawn_link: a connection that crashes is
                reported, the others go on; if the loop crashes, its connections end with it (a
                link ties their fates).
    connection: the manual's; a bad packet makes it crash (raise), which closes its socket.

Run it: python examples/supervisor.py. It shows a connection crashing while another goes on, the
acceptor crashing (taking its connections with it) and restarted, and a drain: no new connections,
the open ones given time to finish, the rest cut.
"""

import sys
import warnings
from collections import deque
from time import monotonic

from _cert import throwaway_certificate

import sslsocket
from sslsocket import receive, self, spawn

SSL_SERVER = throwaway_certificate()
# the example's clients check nothing
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)

#: OTP's restart intensity: more restarts than this within WITHIN seconds, and the supervisor
#: gives up.
MAX_RESTARTS, WITHIN = 3, 5.0


def say(*words):
    """print, in one write: the processes print from threads of their own, and a line must stay
    whole."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")


def supervisor(listen, parent):
    # the acceptor's end comes as a message, not as our own end
    sslsocket.process_flag("trap_exit", True)
    restarts = deque()
    acceptor = sslsocket.spawn_link(loop, listen, parent)
    parent.send(("acceptor", acceptor))
    while True:
        match receive():
            case ("EXIT", pid, reason) if pid is acceptor:
                if reason in ("normal", "shutdown"):
                    say(f"supervisor: the acceptor ended ({reason}): nothing to restart")
                    return
                now = monotonic()
                restarts.append(now)
                while restarts[0] < now - WITHIN:
                    restarts.popleft()
                if len(restarts) > MAX_RESTARTS:
                    say(f"supervisor: {len(restarts)} restarts within {WITHIN:g} s: giving up")
                    return
                acceptor = sslsocket.spawn_link(loop, listen, parent)
                say(f"supervisor: the acceptor crashed ({reason!r}); restarting it")
                parent.send(("acceptor", acceptor))


def loop(listen, parent):
    # a connection's end comes as a message, never as our own end
    sslsocket.process_flag("trap_exit", True)
    while True:
        # linked: if this loop crashes, they end with it
        pid = sslsocket.spawn_link(connection, listen, self())
        while True:
            match receive():
                case (p, "ok") if p is pid:  # receive {Pid, ok} -> loop(Listen) end
                    break
                case ("EXIT", p, "shutdown") if p is pid:  # its listen socket was closed
                    return
                case ("EXIT", p, reason) if reason != "normal":
                    say(f"loop: connection {p} crashed: {reason!r}; the others go on")
                    parent.send(("crashed", p))  # (for the example's order of events)
                case "crash":  # for the example: an acceptor with a bug
                    raise RuntimeError("the acceptor met a bug")


def connection(listen, father):
    socket = sslsocket.accept(listen, f"-cert {SSL_SERVER}")
    father.send((self(), "ok"))
    while True:
        match receive(lambda m: m[0] is socket):
            case (_, ("fromsocket", "bad")):
                raise ValueError("a bad packet")  # the process ends, and its socket closes with it
            case (_, ("fromsocket", data)):
                socket.deliver(data.upper())
            case (_, ("socket_closed", _)):
                return


def user(port, parent, name):
    """A client in a process of its own: says hello, then on the word "leave" says goodbye and
    leaves; tells the parent what it hears, and if its connection is cut."""
    sock = sslsocket.client("STREAM", "AF_INET", ("localhost", port), ("packet", 2), "")
    sock.deliver(f"hello from {name}")
    parent.send((name, receive(lambda m: m[0] is sock, timeout=10)[1]))
    while True:
        match receive(lambda m: m == "leave" or m[0] is sock):
            case "leave":
                sock.deliver("goodbye")
                parent.send((name, receive(lambda m: m[0] is sock, timeout=10)[1]))
                sock.close()
                return
            case (_, ("socket_closed", _)):
                parent.send((name, "cut"))
                return


def main():
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    spawn(supervisor, listen, self())
    _, acceptor = receive(lambda m: m[0] == "acceptor", timeout=10)

    def hears(name):
        say(f"{name} hears:", receive(lambda m: m[0] == name, timeout=30)[1])

    spawn(user, listen.port, self(), "alice")
    hears("alice")
    bad = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), "")
    bad.deliver("bad")
    say("the bad client hears:", receive(lambda m: m[0] is bad, timeout=10)[1])
    receive(lambda m: m[0] == "crashed", timeout=10)  # the loop has heard of it

    acceptor.send("crash")  # its connections end with it: alice's is cut
    _, acceptor = receive(lambda m: m[0] == "acceptor", timeout=10)
    hears("alice")
    spawn(user, listen.port, self(), "bob")
    carol = spawn(user, listen.port, self(), "carol")
    hears("bob")
    hears("carol")

    carol.send("leave")  # carol finishes during the drain; bob stays, and is cut at its deadline
    # (client and server are in this one process: two sockets a connection)
    finished, cut = sslsocket.drain(2)
    say(f"drain: {finished} sockets ended by themselves, {cut} cut")
    hears("carol")
    hears("bob")
    sslsocket.stop()


if __name__ == "__main__":
    main()
