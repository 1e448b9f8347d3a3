"""A mediator's outgoing buffer: packets waiting to be written, joined into few large TLS writes. No sockets here:
``pending`` gives the bytes of the next ``SSL_write``, ``sent`` says how many of them went."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .inbox import Deliver, Envelope

#: Bytes handed to one ``SSL_write``: sixteen full records. Each call into OpenSSL gives up the GIL and takes it back,
#: which costs a thread hand-off when another thread wants it, so the calls are few and large.
WRITE_CHUNK = 256 * 1024
#: The most one ``SSL_write`` takes (its length is a C int): a larger part goes in pieces of this size.
LARGEST_WRITE = 2**30


class Outgoing:
    """Bytes to write, in order. A write that OpenSSL asks to retry must be retried with the very same bytes: so
    ``pending`` gives the same view until ``sent`` accounts for all of it. After the owner's close (``CLOSE``),
    nothing more is taken: nothing is sent after a close."""

    def __init__(self, chunk: int = WRITE_CHUNK, largest: int = LARGEST_WRITE) -> None:
        self._chunk = chunk
        self._largest = largest
        self._parts: deque[bytes | memoryview] = deque()
        self._pending: memoryview | None = None
        self._sealed = False
        #: The bytes not yet written, those of the pending write included.
        self.size = 0
        #: Packets taken, and their bytes, headers included, over the connection's life (``sslsocket.i()``).
        self.packets = self.taken = 0

    def put(self, items: Iterable[Envelope]) -> None:
        """Append the packets of ``items`` (what the inbox holds), in order, each header before its payload, joined
        only when written; the owner's close (``CLOSE``) seals the buffer: nothing after it is taken, now or later."""
        if self._sealed:
            return
        parts, packets, size = self._parts, 0, 0
        for item in items:
            if type(item) is not Deliver:
                self._sealed = True
                break
            header, payload = item.header, item.payload
            if header:
                parts.append(header)
            if payload:
                parts.append(payload)
            packets += 1
            size += len(header) + len(payload)
        self.size += size
        self.taken += size
        self.packets += packets

    def pending(self) -> memoryview | None:
        """The bytes of the next write, or None when everything is written. A part as large as a chunk goes as it
        is; smaller parts (a header, small packets) are joined, topped up from the front of the next part, so that
        the records stay full."""
        if self._pending is not None or not self._parts:
            return self._pending
        parts, chunk = self._parts, self._chunk
        if len(parts[0]) > self._largest:
            whole = memoryview(parts[0])
            parts[0] = whole[self._largest :]
            self._pending = whole[: self._largest]
        elif len(parts[0]) >= chunk or len(parts) == 1:
            self._pending = memoryview(parts.popleft())
        elif self.size <= chunk:  # all of it, in one
            self._pending = memoryview(b"".join(parts))
            parts.clear()
        else:
            self._pending = memoryview(self._join_chunk())
        return self._pending

    def sent(self, count: int) -> memoryview | None:
        """``count`` bytes of the pending write went out; returns what ``pending`` now would."""
        pending = self._pending
        assert pending is not None
        self.size -= count
        if count < len(pending):
            self._pending = pending[count:]
            return self._pending
        self._pending = None
        return self.pending() if self._parts else None

    def clear(self) -> None:
        self._parts.clear()
        self._pending = None
        self.size = 0

    def _join_chunk(self) -> bytes:
        """A chunk's worth of the parts, the last of them cut where the chunk ends."""
        parts, chunk = self._parts, self._chunk
        taken: list[bytes | memoryview] = []
        size = 0
        while parts and size < chunk:
            part = parts[0]
            room = chunk - size
            if len(part) <= room:
                taken.append(parts.popleft())
                size += len(part)
            else:
                view = memoryview(part)
                taken.append(view[:room])
                parts[0] = view[room:]
                size = chunk
        return b"".join(taken)
