"""A chat server in the manual's style: a process per connection, and one more process for the room.

Each connection process owns its socket (only it may deliver on it); the room process only passes
messages.

Run it: python examples/chat.py
"""

import time
import warnings

from _cert import throwaway_certificate

import sslsocket
from sslsocket import receive, self, spawn

SSL_SERVER = throwaway_certificate()
warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)


def room():
    members = set()
    while True:
        match receive():
            case ("join", pid):
                members.add(pid)
            case ("leave", pid):
                members.discard(pid)
            case ("say", speaker, text):
                for member in members - {speaker}:
                    member.send(("hear", text))
            case "close":
                return


def connection(listen, chat):
    try:
        socket = sslsocket.accept(listen, f"-cert {SSL_SERVER}")
    except sslsocket.Closed:  # the server shut down: nobody more to wait for
        return
    spawn(connection, listen, chat)  # the next member's process waits for the next connection
    chat.send(("join", self()))
    while True:
        match receive():
            case (s, ("fromsocket", text)) if s is socket:
                chat.send(("say", self(), text))
            case ("hear", text):
                socket.deliver(text)
            case (s, ("socket_closed", _)) if s is socket:
                chat.send(("leave", self()))
                return


def main():
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    chat = spawn(room)
    spawn(connection, listen, chat)
    alice = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), "")
    bob = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), "")
    time.sleep(0.2)  # both have joined
    alice.deliver("alice: hello, bob")
    print("bob hears:", receive(lambda m: m[0] is bob, timeout=10)[1][1])
    bob.deliver("bob: hello, alice")
    print("alice hears:", receive(lambda m: m[0] is alice, timeout=10)[1][1])
    alice.close()
    bob.close()
    chat.send("close")
    sslsocket.close(listen)
    sslsocket.stop()


if __name__ == "__main__":
    main()
