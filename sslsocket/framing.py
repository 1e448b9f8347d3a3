r"""The manual's modes as pure codecs: bytes in, whole packets out. No sockets, no threads, no clocks.

A decoder's ``feed(data)`` takes whatever TLS handed over and returns the packets it completed, in order; an
empty list means "need more data". A packet's length is judged as soon as its header is complete, before any of it
is buffered (as Erlang's ``packet_parser.c`` does), so a peer that announces too much is refused at once and nothing
large is allocated. ``buffered`` tells how many bytes of an incomplete packet are held, so a caller can tell a
clean end of stream from a truncated one.

A mode's ``encode(payload)`` is the sender's side: the big-endian length header and the payload, refusing what
does not fit the header.

>>> mode = parse_mode(("packet", 2))
>>> mode.encode(b"Hello")
b'\x00\x05Hello'
>>> decoder = mode.decoder()
>>> decoder.feed(b"\x00\x05Hel")  # need more
[]
>>> decoder.feed(b"lo\x00\x02hi\x00")
[b'Hello', b'hi']
>>> decoder.buffered  # one byte of the next header
1
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .errors import BadArgument, ConnectionBroken, ModeError, PacketTooLong, WrongType

#: The default bound on one incoming packet (what follows its header; in ``asn1`` the whole value) for
#: ``{packet, 4}`` and ``asn1``: large enough for any message a framed protocol sends in one piece, small enough
#: that a lying peer cannot exhaust memory. ``{packet, 1}`` and ``{packet, 2}`` are bounded by their headers
#: (255 and 65,535 bytes) too. ``listen`` and ``client`` take another as ``max_packet=``.
MAX_PACKET_SIZE = 64 * 1024 * 1024

#: Pieces smaller than this are gathered into one buffer rather than kept apart: a peer that sends a large packet
#: in tiny TLS records cannot make the pieces' own overhead (some 40 bytes each) outgrow the packet's bound.
SMALL_PIECE = 4096

#: BER tag numbers above 2**28 (a tag of more than five bytes) occur in no real schema; refusing them stops a
#: peer from sending endless continuation bytes.
MAX_TAG_BYTES = 5

#: BER lengths of more than four bytes would announce values over 4 GiB, far past ``MAX_PACKET_SIZE``.
MAX_LENGTH_BYTES = 4

#: How deep indefinite-length values may nest; real encoders nest a handful of levels.
MAX_NESTING = 64

HEADER_SIZES = (0, 1, 2, 4)


class FramingError(ConnectionBroken):
    """The peer broke its mode's framing: a packet past the bound, or malformed BER in ``asn1`` mode. ``packets``
    are those the same ``feed`` completed before the fault: whole, and still the peer's to deliver."""

    packets: Sequence[bytes] = ()


class Decoder(Protocol):
    def feed(self, data: bytes) -> list[bytes]: ...

    @property
    def buffered(self) -> int: ...


class RawDecoder:
    """``raw``, ``{packet, 0}``: every chunk that arrives is delivered as it is."""

    buffered = 0

    def feed(self, data: bytes) -> list[bytes]:
        return [bytes(data)] if data else []


#: The length header of each ``{packet, N}``: big-endian, unsigned.
_HEADERS = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I")}


class PrefixedDecoder:
    """``{packet, N}`` for N in 1, 2, 4: an N-byte big-endian length before each packet.

    A packet that is not whole yet is kept as the pieces that arrive and joined once, when it is complete: gathered
    in one growing buffer, each read would be copied into it again, and the buffer once more into the packet. Only
    a header cut in two waits in a buffer, of at most three bytes. Each ``feed`` slices whole packets out of the
    bytes it is given: the path of every packet.
    """

    def __init__(self, header: int, limit: int = MAX_PACKET_SIZE) -> None:
        if header not in (1, 2, 4):
            raise ValueError(f"header size must be 1, 2 or 4, not {header!r}")
        self._header = header
        self._limit = min(limit, 256**header - 1)
        self._unpack = _HEADERS[header].unpack_from
        self._buf = b""  # the start of a header
        self._pieces: list[bytes | bytearray] = []  # a packet's payload so far, while ``_missing`` is not 0
        self._collected = 0
        self._missing = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) + (self._header + self._collected if self._missing else 0)

    def feed(self, data: bytes) -> list[bytes]:
        packets: list[bytes] = []
        if type(data) is not bytes:
            data = bytes(data)
        if self._missing:
            missing = self._missing
            if len(data) < missing:
                self._keep(data)
                self._collected += len(data)
                self._missing -= len(data)
                return packets
            self._keep(data[:missing])
            packets.append(b"".join(self._pieces))
            self._pieces, self._collected, self._missing = [], 0, 0
            data = data[missing:]
        if self._buf:
            data = self._buf + data
        header, limit, unpack, size = self._header, self._limit, self._unpack, len(data)
        pos = 0
        while pos + header <= size:
            (length,) = unpack(data, pos)
            if length > limit:
                error = FramingError(
                    f"the peer announced a packet of {length} bytes; this socket's bound is {limit}", "too_long"
                )
                error.packets = packets
                raise error
            start = pos + header
            pos = start + length
            if pos > size:  # the rest comes in later feeds
                self._keep(data[start:])
                self._collected = size - start
                self._missing = pos - size
                self._buf = b""
                return packets
            packets.append(data[start:pos])
        self._buf = data[pos:]
        return packets

    def _keep(self, piece: bytes) -> None:
        pieces = self._pieces
        if len(piece) >= SMALL_PIECE:
            pieces.append(piece)
        elif pieces and type(pieces[-1]) is bytearray:
            pieces[-1] += piece
        else:
            pieces.append(bytearray(piece))


class Asn1Decoder:
    """``asn1``: one whole BER-coded value (tag, length and contents) per packet.

    Beyond the manual, the indefinite-length form is read whole, up to its end-of-contents octets, however its
    pieces arrive.

    The decoder remembers how far it has looked (as h11's receive buffer does): ``_looked_at`` is where the next
    header of the unfinished value begins (or, past the bytes at hand, where a definite-length content ends), and
    ``_open`` how many indefinite-length values are open there. Each ``feed`` resumes from that point, so every
    header is read once and a definite-length content is skipped, never scanned: linear in the input, whatever
    the split. Only a header cut in two by a feed is read again, and a header is at most 10 bytes.
    """

    def __init__(self, limit: int = MAX_PACKET_SIZE) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._looked_at = 0
        self._open = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        packets: list[bytes] = []
        start = 0  # where the unfinished value begins in buf
        try:
            while True:
                end = self._scan(buf, start)
                if end is None:
                    break
                packets.append(bytes(buf[start:end]))
                start = self._looked_at = end
            if len(buf) - start > self._limit:
                raise FramingError(f"a BER value longer than this socket's bound of {self._limit} bytes", "too_long")
        except FramingError as error:
            error.packets = packets
            raise
        finally:
            del buf[:start]
            self._looked_at -= start
        return packets

    def _scan(self, buf: bytearray, start: int) -> int | None:
        """Read on from ``_looked_at`` in the value that begins at ``start``: the index just past it once it is
        whole, None when more bytes are needed (``_looked_at`` and ``_open`` then say where to resume)."""
        pos, size = self._looked_at, len(buf)
        while True:
            if self._open:
                if pos + 2 > size:
                    break
                if buf[pos] == 0:  # end-of-contents of the innermost open value
                    if buf[pos + 1] != 0:
                        raise _bad_ber("an end-of-contents marker with a non-zero length")
                    self._open -= 1
                    pos += 2
                    continue
            elif pos > start:
                if pos <= size:
                    return pos  # the whole value is at hand
                break
            if pos >= size:
                break
            header = _ber_header(buf, pos)
            if header is None:
                break
            contents, length, constructed = header
            if length is None:
                if not constructed:
                    raise _bad_ber("the indefinite length on a primitive value")
                if self._open >= MAX_NESTING:
                    raise _bad_ber(f"indefinite-length values nested more than {MAX_NESTING} deep")
                self._open += 1
                pos = contents
                continue
            pos = contents + length
            if pos - start > self._limit:
                raise FramingError(
                    f"the peer announced a BER value of {pos - start} bytes or more; this socket's bound is"
                    f" {self._limit}",
                    "too_long",
                )
        self._looked_at = pos
        return None


def _bad_ber(what: str) -> FramingError:
    return FramingError(f"malformed BER from the peer: {what}", "bad_asn1")


def _ber_header(buf: bytes | bytearray, pos: int) -> tuple[int, int | None, bool] | None:
    """The BER tag and length that begin at ``buf[pos]``: ``(where the contents begin, their length or None for
    the indefinite form, whether the value is constructed)``, or None when the header is not all there yet.
    Raises ``FramingError`` as soon as the bytes at hand show it is malformed."""
    size = len(buf)
    first = buf[pos]
    at = pos + 1
    if first & 0x1F == 0x1F:  # high tag number form: base-128 digits, the last without its top bit
        while True:
            if at >= size:
                return None
            if at - pos >= MAX_TAG_BYTES:
                raise _bad_ber(f"a tag longer than {MAX_TAG_BYTES} bytes")
            at += 1
            if not buf[at - 1] & 0x80:
                break
    if at >= size:
        return None
    first_length = buf[at]
    at += 1
    constructed = bool(first & 0x20)
    if first_length == 0x80:
        return at, None, constructed
    if first_length < 0x80:
        return at, first_length, constructed
    count = first_length & 0x7F
    if count > MAX_LENGTH_BYTES:
        raise _bad_ber(f"a length of {count} bytes (at most {MAX_LENGTH_BYTES} are accepted)")
    if at + count > size:
        return None
    return at + count, int.from_bytes(buf[at : at + count], "big"), constructed


@dataclass(frozen=True)
class Mode:
    """One of the manual's modes: how packets are framed on the wire, and whether they arrive as bytes or str."""

    header: int  # 0, 1, 2 or 4: bytes of length before each packet (0 for raw and asn1)
    binary: bool  # deliver bytes (binary_packet) rather than str (packet, raw, asn1)
    asn1: bool = False
    limit: int = MAX_PACKET_SIZE  # the bound on one incoming packet (none in raw mode, which has no packets)

    def __str__(self) -> str:
        if self.asn1:
            return "asn1"
        return f"{{{'binary_packet' if self.binary else 'packet'}, {self.header}}}"

    def decoder(self) -> Decoder:
        """A new decoder for this mode: ``feed(bytes)`` returns the packets it completed, in order."""
        if self.asn1:
            return Asn1Decoder(self.limit)
        if self.header:
            return PrefixedDecoder(self.header, self.limit)
        return RawDecoder()

    def bounded(self, max_packet: object) -> Mode:
        """This mode with another bound on one incoming packet: ``max_packet=`` of ``listen`` and ``client``.

        >>> parse_mode(("packet", 4)).bounded(1024).decoder().feed(bytes([0, 0, 4, 1]))
        Traceback (most recent call last):
        ...
        sslsocket.framing.FramingError: the peer announced a packet of 1025 bytes; this socket's bound is 1024
        """
        if type(max_packet) is not int or max_packet < 0:
            raise BadArgument(
                f"max_packet must be a number of bytes (an int, 0 or more), not {max_packet!r}",
                ("bad_argument", "max_packet", max_packet),
            )
        return replace(self, limit=max_packet)

    def encode(self, payload: bytes) -> bytes:
        """The bytes on the wire for one packet; raises ``PacketTooLong`` when the header cannot hold its length."""
        return self.header_for(len(payload)) + payload

    def header_for(self, length: int) -> bytes:
        """The length header that goes before a packet of ``length`` bytes (empty in raw and asn1 modes)."""
        if not self.header:
            return b""
        if length >= 256**self.header:
            raise PacketTooLong(
                f"a packet of {length} bytes does not fit the {self.header}-byte header of mode {self}"
                f" (at most {256**self.header - 1})",
                ("too_long", length),
            )
        return length.to_bytes(self.header, "big")

    def present(self, packets: list[bytes]) -> list[Any]:
        """Packets as the owner receives them: bytes in binary modes, a str of one character per byte otherwise
        (a batch at a time: the path of every read)."""
        return packets if self.binary else [packet.decode("latin-1") for packet in packets]


_NAMED_MODES = {
    "raw": Mode(0, False),
    "onebyte": Mode(1, False),
    "twobytes": Mode(2, False),
    "fourbytes": Mode(4, False),
    "asn1": Mode(0, False, asn1=True),
}

_NOTATION = re.compile(r"\{\s*(packet|binary_packet)\s*,\s*(\d+)\s*\}")


def parse_mode(mode: object) -> Mode:
    """The manual's ``Mode`` in its Python spelling (``("packet", 2)``, ``"raw"``, ``"asn1"``...) or in Erlang
    notation (``"{packet,2}"``); anything else raises ``ModeError`` naming it.

    >>> parse_mode("twobytes") == parse_mode(("packet", 2)) == parse_mode("{packet,2}")
    True
    >>> print(parse_mode(("binary_packet", 4)))
    {binary_packet, 4}
    >>> parse_mode(("packet", 3))
    Traceback (most recent call last):
    ...
    sslsocket.errors.ModeError: bad mode ('packet', 3): N in ('packet', N) must be one of 0, 1, 2, 4
    """
    if isinstance(mode, Mode):
        return mode
    spelled = mode
    if isinstance(mode, str):
        if mode in _NAMED_MODES:
            return _NAMED_MODES[mode]
        match = _NOTATION.fullmatch(mode.strip())
        if match:
            mode = (match.group(1), int(match.group(2)))
    if isinstance(mode, tuple) and len(mode) == 2 and mode[0] in ("packet", "binary_packet"):
        kind, header = mode
        if type(header) is int and header in HEADER_SIZES:
            return Mode(header, kind == "binary_packet")
        raise ModeError(f"bad mode {spelled!r}: N in ({kind!r}, N) must be one of 0, 1, 2, 4", ("mode", spelled))
    raise ModeError(
        f"bad mode {mode!r}: expected ('packet', N), ('binary_packet', N), 'raw', 'onebyte', 'twobytes',"
        " 'fourbytes' or 'asn1'",
        ("mode", mode),
    )


def to_bytes(data: object) -> bytes:
    """What ``deliver`` sends: a str is one byte per character (an Erlang string), bytes-like is a binary, and a
    list may hold byte values, strings, binaries and further lists (an Erlang iolist).

    >>> to_bytes("\u20ac")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sslsocket.errors.BadArgument: cannot deliver '€' at index 0: a str is sent one byte per character, ...
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        try:
            return data.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise BadArgument(
                f"cannot deliver {data[exc.start]!r} at index {exc.start}: a str is sent one byte per character,"
                " so every character must be at most U+00FF; encode the text first (for example .encode())",
                ("bad_argument", "data", data[exc.start]),
            ) from None
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, list):
        out = bytearray()
        _flatten(data, out)
        return bytes(out)
    raise WrongType(
        f"cannot deliver {type(data).__name__} {data!r:.40}: give a str, a bytes-like object or a list of bytes",
        ("wrong_type", "data", type(data).__name__),
    )


def _flatten(items: list[object], out: bytearray) -> None:
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item <= 255:
                raise BadArgument(
                    f"cannot deliver {item!r}: a byte list holds values from 0 to 255", ("bad_argument", "data", item)
                )
            out.append(item)
        elif isinstance(item, list):
            _flatten(item, out)
        else:
            out += to_bytes(item)
