"""The pure codecs, byte by byte: no sockets, no threads."""

from __future__ import annotations

import itertools
import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sslsocket import ModeError, PacketTooLong
from sslsocket.framing import (
    MAX_PACKET_SIZE,
    Asn1Decoder,
    FramingError,
    Mode,
    PrefixedDecoder,
    RawDecoder,
    parse_mode,
    to_bytes,
)

# ---- modes -------------------------------------------------------------------------------------------------

MODES = [
    (("packet", 0), Mode(0, False)),
    (("packet", 1), Mode(1, False)),
    (("packet", 2), Mode(2, False)),
    (("packet", 4), Mode(4, False)),
    (("binary_packet", 0), Mode(0, True)),
    (("binary_packet", 1), Mode(1, True)),
    (("binary_packet", 2), Mode(2, True)),
    (("binary_packet", 4), Mode(4, True)),
    ("raw", Mode(0, False)),
    ("onebyte", Mode(1, False)),
    ("twobytes", Mode(2, False)),
    ("fourbytes", Mode(4, False)),
    ("asn1", Mode(0, False, asn1=True)),
    ("{packet,2}", Mode(2, False)),
    ("{binary_packet, 4}", Mode(4, True)),
]


@pytest.mark.parametrize(("spelling", "mode"), MODES)
def test_parse_mode(spelling: object, mode: Mode) -> None:
    assert parse_mode(spelling) == mode


@pytest.mark.parametrize(
    "bad",
    [("packet", 3), ("packet", "2"), ("packet", True), ("bytes", 2), "threebytes", 2, None, ("packet",), "{packet,3}"],
)
def test_bad_mode_names_the_culprit(bad: object) -> None:
    with pytest.raises(ModeError) as info:
        parse_mode(bad)
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_mode_str_is_the_manual_notation() -> None:
    assert str(parse_mode(("packet", 2))) == "{packet, 2}"
    assert str(parse_mode(("binary_packet", 4))) == "{binary_packet, 4}"
    assert str(parse_mode("asn1")) == "asn1"


# ---- encode ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "payload", "wire"),
    [
        (("packet", 0), b"abc", b"abc"),
        (("packet", 1), b"abc", b"\x03abc"),
        (("packet", 2), b"abc", b"\x00\x03abc"),
        (("packet", 4), b"abc", b"\x00\x00\x00\x03abc"),
        (("packet", 2), b"", b"\x00\x00"),
        (("packet", 1), b"x" * 255, b"\xff" + b"x" * 255),
        (("packet", 2), b"x" * 65535, b"\xff\xff" + b"x" * 65535),
        ("asn1", b"\x04\x01A", b"\x04\x01A"),
    ],
)
def test_encode(mode: object, payload: bytes, wire: bytes) -> None:
    assert parse_mode(mode).encode(payload) == wire


@pytest.mark.parametrize(("mode", "size"), [(("packet", 1), 256), (("packet", 2), 65536), ("onebyte", 1000)])
def test_encode_refuses_what_the_header_cannot_hold(mode: object, size: int) -> None:
    with pytest.raises(PacketTooLong) as info:
        parse_mode(mode).encode(b"x" * size)
    assert str(size) in str(info.value) and isinstance(info.value, ValueError)


def test_present_list_and_binary() -> None:
    assert parse_mode(("packet", 2)).present([b"\x00\xff"]) == ["\x00\xff"]
    assert parse_mode(("binary_packet", 2)).present([b"\x00\xff"]) == [b"\x00\xff"]


# ---- decoders, byte by byte ----------------------------------------------------------------------------------


def feed_bytewise(decoder: object, wire: bytes) -> list[bytes]:
    out: list[bytes] = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])  # type: ignore[attr-defined]
    return out


PREFIXED = [
    (1, [b"", b"a", b"hello", b"x" * 255]),
    (2, [b"", b"\x00\x01", b"y" * 300, b"z" * 65535]),
    (4, [b"", b"q", b"w" * 70000]),
]


@pytest.mark.parametrize(("header", "packets"), PREFIXED)
def test_prefixed_whole_and_bytewise(header: int, packets: list[bytes]) -> None:
    mode = Mode(header, True)
    wire = b"".join(mode.encode(p) for p in packets)
    assert PrefixedDecoder(header).feed(wire) == packets
    decoder = PrefixedDecoder(header)
    assert feed_bytewise(decoder, wire) == packets
    assert decoder.buffered == 0


@pytest.mark.parametrize("header", [1, 2, 4])
def test_prefixed_keeps_trailing_data(header: int) -> None:
    mode = Mode(header, True)
    decoder = PrefixedDecoder(header)
    wire = mode.encode(b"one") + mode.encode(b"two")
    assert decoder.feed(wire + wire[:header]) == [b"one", b"two"]
    assert decoder.buffered == header
    assert decoder.feed(b"") == []
    assert decoder.feed(mode.encode(b"one")[header:]) == [b"one"]
    assert decoder.feed(mode.encode(b"two")[: header + 1]) == []
    assert decoder.buffered == header + 1


def test_prefixed_judges_the_length_as_soon_as_the_header_is_complete() -> None:
    decoder = PrefixedDecoder(4, limit=1000)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FramingError) as info:
        decoder.feed(b"\x03\xe9")  # 1001: refused before a byte of it arrives
    assert info.value.reason == "too_long"
    with pytest.raises(FramingError):
        PrefixedDecoder(4).feed(b"\xff\xff\xff\xff")
    assert PrefixedDecoder(4, limit=1000).feed(b"\x00\x00\x03\xe8") == []  # 1000 is within the bound


def test_prefixed_large_packets_in_pieces() -> None:
    big = bytes(range(256)) * 400  # 102,400 bytes
    wire = (len(big).to_bytes(4, "big") + big) * 2 + b"\x00\x00\x00\x02hi" + b"\x00\x00"
    for step in (1, 7, 16384, 65536, len(wire)):
        decoder = PrefixedDecoder(4)
        out: list[bytes] = []
        for start in range(0, len(wire), step):
            out += decoder.feed(wire[start : start + step])
        assert out == [big, big, b"hi"]
        assert decoder.buffered == 2  # half of the next header
    decoder = PrefixedDecoder(4)
    assert decoder.feed(wire[:1004]) == []
    assert decoder.buffered == 1004  # the header and 1,000 bytes of the payload, held either way
    assert decoder.feed(wire[1004 : 4 + len(big) + 3]) == [big]
    assert decoder.buffered == 3


def test_prefixed_tiny_pieces_of_a_large_packet_cost_no_more_than_the_packet() -> None:
    # A peer may send a large packet one byte per TLS record: its pieces' own overhead (some 40 bytes each as
    # separate objects) must not outgrow the bound the packet was judged by.
    big = bytes(range(256)) * 400
    wire = len(big).to_bytes(4, "big") + big
    decoder = PrefixedDecoder(4)
    tracemalloc.start()
    try:
        for index in range(len(wire) - 1):
            assert decoder.feed(wire[index : index + 1]) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(big)
    assert decoder.buffered == len(wire) - 1
    assert decoder.feed(wire[-1:]) == [big]


def test_prefixed_a_large_packet_is_still_judged_at_its_header() -> None:
    decoder = PrefixedDecoder(4, limit=200_000)
    assert decoder.feed(b"\x00\x03\x0d\x40" + b"x" * 10) == []  # 200,000: within the bound
    assert decoder.buffered == 14
    with pytest.raises(FramingError, match="200001 bytes"):
        PrefixedDecoder(4, limit=200_000).feed(b"\x00\x03\x0d\x41")


def test_a_framing_fault_carries_the_packets_whole_before_it() -> None:
    with pytest.raises(FramingError) as info:
        PrefixedDecoder(4, limit=100).feed(b"\x00\x00\x00\x02hi\x00\x00\x00\x00" + b"\x00\x00\x00\x65")
    assert list(info.value.packets) == [b"hi", b""]
    big = PrefixedDecoder(4, limit=1000)
    assert big.feed(b"\x00\x00\x00\x14" + b"a" * 5) == []  # a packet in pieces, then its end and a lie
    with pytest.raises(FramingError) as info:
        big.feed(b"a" * 15 + b"\xff\xff\xff\xff")
    assert list(info.value.packets) == [b"a" * 20]
    with pytest.raises(FramingError) as info:
        Asn1Decoder().feed(b"\x04\x02hi\x04\x85\x00\x00\x00\x00\x10")
    assert list(info.value.packets) == [b"\x04\x02hi"] and info.value.reason == "bad_asn1"
    with pytest.raises(FramingError) as info:
        Asn1Decoder(limit=10).feed(b"\x04\x02hi\x04\x20" + b"x" * 10)
    assert list(info.value.packets) == [b"\x04\x02hi"] and info.value.reason == "too_long"
    with pytest.raises(FramingError) as info:
        PrefixedDecoder(2, limit=5).feed(b"\x00\x06")
    assert list(info.value.packets) == []


def test_default_bound_is_max_packet_size() -> None:
    ok = (MAX_PACKET_SIZE).to_bytes(4, "big")
    assert PrefixedDecoder(4).feed(ok) == []
    with pytest.raises(FramingError):
        PrefixedDecoder(4).feed((MAX_PACKET_SIZE + 1).to_bytes(4, "big"))


def test_a_mode_bounded_otherwise_gives_decoders_that_bound() -> None:
    four, ber = parse_mode(("packet", 4)).bounded(1000), parse_mode("asn1").bounded(100)
    assert four.decoder().feed(b"\x00\x00\x03\xe8") == []
    with pytest.raises(FramingError, match="1001 bytes; this socket's bound is 1000"):
        four.decoder().feed(b"\x00\x00\x03\xe9")
    assert ber.decoder().feed(b"\x04\x62" + b"x" * 98) == [b"\x04\x62" + b"x" * 98]  # 100 bytes in all
    with pytest.raises(FramingError, match="bound is 100"):
        ber.decoder().feed(b"\x04\x63")
    assert str(four) == "{packet, 4}" and four.header == 4  # the same mode otherwise
    assert parse_mode(("packet", 4)).decoder().feed(b"\x00\x00\x03\xe9") == []  # the default is untouched


@pytest.mark.parametrize("bad", [-1, 1.5, "1024", None, True])
def test_a_bad_bound_names_the_culprit(bad: object) -> None:
    with pytest.raises(ValueError, match=f"max_packet must be .*not {re.escape(repr(bad))}"):
        parse_mode(("packet", 4)).bounded(bad)


def test_raw_delivers_chunks_and_never_an_empty_one() -> None:
    decoder = RawDecoder()
    assert decoder.feed(b"abc") == [b"abc"]
    assert decoder.feed(b"") == []
    assert decoder.buffered == 0


ASN1 = [
    ("short definite", bytes.fromhex("0401") + b"A"),
    ("empty", bytes.fromhex("0500")),
    ("long form, one length byte", bytes.fromhex("0481c8") + b"x" * 200),
    ("long form, two length bytes", bytes.fromhex("04820190") + b"y" * 400),
    ("long form, leading zero", bytes.fromhex("048200") + bytes.fromhex("05") + b"z" * 5),
    ("high tag number", bytes.fromhex("5f8f7f03") + b"abc"),
    ("constructed sequence", bytes.fromhex("3006") + bytes.fromhex("020101") + bytes.fromhex("020102")),
    ("indefinite", bytes.fromhex("3080") + bytes.fromhex("020101") + bytes.fromhex("0000")),
    (
        "nested indefinite",
        bytes.fromhex("3080")
        + bytes.fromhex("a080")
        + bytes.fromhex("0401")
        + b"k"
        + bytes.fromhex("0000")
        + bytes.fromhex("020105")
        + bytes.fromhex("0000"),
    ),
    ("indefinite, empty", bytes.fromhex("30800000")),
]


@pytest.mark.parametrize(("name", "value"), ASN1, ids=[name for name, _ in ASN1])
def test_asn1_whole_bytewise_and_with_trailing_data(name: str, value: bytes) -> None:
    assert Asn1Decoder().feed(value) == [value]
    decoder = Asn1Decoder()
    assert feed_bytewise(decoder, value) == [value]
    assert decoder.buffered == 0
    decoder = Asn1Decoder()
    assert decoder.feed(value + value + value[:1]) == [value, value]
    assert decoder.buffered == 1


def test_asn1_several_values_in_one_chunk() -> None:
    values = [value for _, value in ASN1]
    assert Asn1Decoder().feed(b"".join(values)) == values


@pytest.mark.parametrize(
    ("name", "wire", "reason"),
    [
        ("length of length over 4", bytes.fromhex("0485") + b"\x00" * 5, "bad_asn1"),
        ("endless tag continuation", bytes.fromhex("1f") + b"\x80" * 10, "bad_asn1"),
        ("indefinite primitive", bytes.fromhex("0480"), "bad_asn1"),
        ("bad end of contents", bytes.fromhex("3080") + bytes.fromhex("0001"), "bad_asn1"),
        ("nested too deep", bytes.fromhex("3080") * 65, "bad_asn1"),
        ("past the bound", bytes.fromhex("0484ffffffff"), "too_long"),
    ],
)
def test_asn1_refuses_malformed_input_with_a_clear_error(name: str, wire: bytes, reason: str) -> None:
    with pytest.raises(FramingError) as info:
        Asn1Decoder().feed(wire)
    assert info.value.reason == reason
    with pytest.raises(FramingError):
        feed_bytewise(Asn1Decoder(), wire)


def test_asn1_indefinite_value_bounded_while_incomplete() -> None:
    decoder = Asn1Decoder(limit=100)
    assert decoder.feed(bytes.fromhex("3080")) == []
    with pytest.raises(FramingError):
        for _ in range(50):
            decoder.feed(bytes.fromhex("040100"))


def _ber(tag: int, contents: bytes, indefinite: bool = False) -> bytes:
    """A BER value with a low tag number: definite (short or long form) or, constructed, indefinite."""
    if indefinite:
        return bytes([tag | 0x20, 0x80]) + contents + b"\x00\x00"
    n = len(contents)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + contents


BER_VALUES = st.recursive(
    st.binary(max_size=300).map(lambda b: _ber(0x04, b)),
    lambda inner: st.tuples(st.lists(inner, max_size=5), st.booleans()).map(
        lambda t: _ber(0x10, b"".join(t[0]), indefinite=t[1])
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(BER_VALUES, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_asn1_any_split_gives_the_values_of_one_feed(values: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(values)
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    decoder = Asn1Decoder()
    got: list[bytes] = []
    for begin, end in itertools.pairwise(points):
        got += decoder.feed(wire[begin:end])
    assert got == values == Asn1Decoder().feed(wire)
    assert decoder.buffered == 0


@pytest.mark.parametrize("size", [256 * 1024, 512 * 1024, 1024 * 1024])
def test_asn1_reads_each_header_once_whatever_the_split(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault found from the outside: every feed re-scanned an unfinished indefinite-length value from its
    start, quadratic in its size (1 MiB in 16 KiB records: 3 s). Counting the headers read says the same without a
    clock: each header once, plus at most one cut in two by each feed."""
    import sslsocket.framing as framing

    reads = 0
    real = framing._ber_header

    def counting(buf: bytes | bytearray, pos: int) -> object:
        nonlocal reads
        reads += 1
        return real(buf, pos)

    monkeypatch.setattr(framing, "_ber_header", counting)
    inner = _ber(0x04, b"x" * 100)
    count = size // len(inner)
    wire = _ber(0x10, inner * count, indefinite=True) + _ber(0x04, b"after")
    decoder = Asn1Decoder()
    got: list[bytes] = []
    feeds = 0
    for begin in range(0, len(wire), 16 * 1024):
        got += decoder.feed(wire[begin : begin + 16 * 1024])
        feeds += 1
    assert got == [wire[: -len(_ber(0x04, b"after"))], _ber(0x04, b"after")]
    assert reads <= count + 2 + feeds  # the outer header, the inner ones, the last value, cut ones


def test_asn1_a_definite_value_is_skipped_not_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    import sslsocket.framing as framing

    reads: list[int] = []
    real = framing._ber_header
    monkeypatch.setattr(framing, "_ber_header", lambda buf, pos: reads.append(pos) or real(buf, pos))
    value = _ber(0x04, b"\x30\x80" * 50_000)  # contents that would look like headers, were they scanned
    decoder = Asn1Decoder()
    got = [p for begin in range(0, len(value), 1000) for p in decoder.feed(value[begin : begin + 1000])]
    assert got == [value] and reads == [0]


# ---- what deliver takes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        ("Hello there", b"Hello there"),
        ("\x00\xff", b"\x00\xff"),
        (b"\x01\x02", b"\x01\x02"),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"cd"), b"cd"),
        ([72, 105], b"Hi"),
        ([72, "ello", [b" ", [116, 104]], "ere"], b"Hello there"),
        ([], b""),
    ],
)
def test_to_bytes(data: object, wire: bytes) -> None:
    assert to_bytes(data) == wire


@pytest.mark.parametrize(("data", "culprit"), [("caf\u00e9\u20ac", "'€' at index 4"), ([1, 256], "256"), ([-1], "-1")])
def test_to_bytes_names_the_culprit(data: object, culprit: str) -> None:
    with pytest.raises(ValueError) as info:
        to_bytes(data)
    assert culprit in str(info.value)


def test_to_bytes_refuses_other_types() -> None:
    with pytest.raises(TypeError, match="dict"):
        to_bytes({})


# ---- properties ---------------------------------------------------------------------------------------------

packets = st.lists(st.binary(max_size=300), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    header=st.sampled_from([1, 2, 4]),
    items=packets,
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_any_split_of_encoded_packets_decodes_to_the_same_packets(
    header: int, items: list[bytes], cuts: list[int]
) -> None:
    mode = Mode(header, True)
    items = [item[: 256**header - 1] for item in items]
    wire = b"".join(mode.encode(item) for item in items)
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    decoder = PrefixedDecoder(header)
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += decoder.feed(wire[start:end])
    assert out == items
    assert decoder.buffered == 0


def ber(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        head = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + content


ber_values = st.recursive(
    st.binary(max_size=200).map(lambda b: ber(0x04, b)),
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda cs: ber(0x30, b"".join(cs))),
        st.lists(children, max_size=4).map(lambda cs: b"\x30\x80" + b"".join(cs) + b"\x00\x00"),
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(ber_values, max_size=6), cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_of_ber_values_decodes_to_the_same_values(values: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(values)
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    decoder = Asn1Decoder()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += decoder.feed(wire[start:end])
    assert out == values


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), header=st.sampled_from([0, 1, 2, 4, "asn1"]))
def test_random_bytes_raise_nothing_but_the_codec_error(data: bytes, header: object) -> None:
    mode = parse_mode("asn1") if header == "asn1" else Mode(header, True)  # type: ignore[arg-type]
    decoder = mode.bounded(150).decoder()
    try:
        decoder.feed(data)
    except FramingError:
        pass
    assert decoder.buffered <= 150
