"""The manual's top/loop/connection, kept running by a supervisor, as OTP keeps an Erlang server running.

    supervisor: process_flag(trap_exit, true), Acceptor = spawn_link(loop, [Listen]), then for each
                {'EXIT', Acceptor, Reason}: restart it (one-for-one), at most MAX_RESTARTS in WITHIN seconds.
    loop:       the manual's, with spawn_monitor: a connection that crashes is reported, the others go on.
    connection: the manual's; a bad packet makes it crash (raise), which closes its socket.

Run it: python examples/supervisor.py. It shows a connection crashing while another goes on, the acceptor
crashing and restarted, and a drain: no new connections, the open ones given time to finish, the rest cut.
"""

import sys
import warnings
from collections import deque
from time import monotonic

from _cert import throwaway_certificate

import sslsocket
from sslsocket import receive, self, spawn

SSL_SERVER = throwaway_certificate()
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)  # the example's clients check nothing

#: OTP's restart intensity: more restarts than this within WITHIN seconds and the supervisor gives up.
MAX_RESTARTS, WITHIN = 3, 5.0


def say(*words):
    """print, in one write: the processes print from threads of their own, and a line must stay whole."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")


def supervisor(listen, parent):
    sslsocket.process_flag("trap_exit", True)  # the acceptor's end comes as a message, not as our own end
    restarts = deque()
    acceptor = sslsocket.spawn_link(loop, listen)
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
                acceptor = sslsocket.spawn_link(loop, listen)
                say(f"supervisor: the acceptor crashed ({reason!r}); restarting it")
                parent.send(("acceptor", acceptor))


def loop(listen):
    while True:
        pid, _ = sslsocket.spawn_monitor(connection, listen, self())
        while True:
            match receive():
                case (p, "ok") if p is pid:  # receive {Pid, ok} -> loop(Listen) end
                    break
                case ("DOWN", _, "process", p, "shutdown") if p is pid:  # its listen socket was closed
                    return
                case ("DOWN", _, "process", p, reason) if reason != "normal":
                    say(f"loop: connection {p} crashed: {reason!r}; the others go on")
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
    """A client in a process of its own: says hello, waits for the word to say its last and leave."""
    sock = sslsocket.client("STREAM", "AF_INET", ("localhost", port), ("packet", 2), "")
    sock.deliver(f"hello from {name}")
    parent.send((name, receive(lambda m: m[0] is sock, timeout=10)[1]))
    match receive(lambda m: m in ("leave", "stay") or m[0] is sock):
        case "leave":
            sock.deliver("goodbye")
            parent.send((name, receive(lambda m: m[0] is sock, timeout=10)[1]))
            sock.close()
        case _:  # stays until its connection is cut
            parent.send((name, receive(lambda m: m[0] is sock, timeout=30)[1][0]))


def main():
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    spawn(supervisor, listen, self())
    _, acceptor = receive(lambda m: m[0] == "acceptor", timeout=10)

    alice = spawn(user, listen.port, self(), "alice")
    say("alice hears:", receive(lambda m: m[0] == "alice", timeout=10)[1])
    bad = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), "")
    bad.deliver("bad")
    say("the bad client hears:", receive(lambda m: m[0] is bad, timeout=10)[1])

    acceptor.send("crash")
    _, acceptor = receive(lambda m: m[0] == "acceptor", timeout=10)
    bob = spawn(user, listen.port, self(), "bob")
    say("bob hears:", receive(lambda m: m[0] == "bob", timeout=10)[1])

    alice.send("leave")  # alice finishes during the drain; bob stays, and is cut at its deadline
    bob.send("stay")
    finished, cut = sslsocket.drain(2)  # (client and server are in this one process: two sockets a connection)
    say(f"drain: {finished} sockets ended by themselves, {cut} cut")
    say("alice hears:", receive(lambda m: m[0] == "alice", timeout=10)[1])
    say("bob hears:", receive(lambda m: m[0] == "bob", timeout=10)[1])
    sslsocket.stop()


if __name__ == "__main__":
    main()
