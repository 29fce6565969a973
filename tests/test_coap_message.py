"""loadgen.coap.message against aiocoap's encoding (RFC 7252), both directions, and on garbage."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.coap import message as m
from loadgen.coap.exchange import Request
from loadgen.protocol.errors import CoapFormatError

aiocoap_message = pytest.importorskip("aiocoap.message")
from aiocoap.numbers.codes import Code  # noqa: E402
from aiocoap.numbers.optionnumbers import OptionNumber  # noqa: E402
from aiocoap.numbers.types import Type  # noqa: E402
from aiocoap.optiontypes import OpaqueOption  # noqa: E402

# Option numbers with every delta form (4-bit, 1-byte and 2-byte extension) and value
# lengths likewise; values are raw bytes (aiocoap's OpaqueOption keeps them as they are).
# aiocoap decodes the options it knows into typed values (text, uint, block), so those get
# values of their type in canonical form; every other number an opaque value.
STRING_OPTIONS = (3, 8, 11, 15, 20, 35, 39)
UINT_OPTIONS = (6, 7, 12, 13, 14, 16, 17, 28, 60, 258)
BLOCK_OPTIONS = (23, 27)
KNOWN = set(STRING_OPTIONS + UINT_OPTIONS + BLOCK_OPTIONS)
option = st.one_of(
    st.tuples(st.sampled_from(STRING_OPTIONS), st.text(max_size=40).map(str.encode)),
    st.tuples(st.sampled_from(UINT_OPTIONS), st.integers(0, 2**32 - 1).map(m.encode_uint)),
    st.tuples(st.sampled_from(BLOCK_OPTIONS), st.builds(m.encode_block, st.integers(0, 2**16), st.booleans(),
                                                        st.integers(0, 6))),
    st.tuples(st.integers(0, 2000).filter(lambda n: n not in KNOWN), st.binary(max_size=300)),
)
options = st.lists(option, max_size=8).map(lambda opts: tuple(sorted(opts, key=lambda o: o[0])))
messages = st.builds(
    m.Message,
    mtype=st.integers(0, 3),
    code=st.integers(1, 255),
    mid=st.integers(0, 0xFFFF),
    token=st.binary(max_size=8),
    options=options,
    payload=st.binary(max_size=200),
)


def aiocoap_encode(msg: m.Message) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        other = aiocoap_message.Message(code=Code(msg.code), payload=msg.payload)
        other.mtype, other.mid, other.token = Type(msg.mtype), msg.mid, msg.token
        for number, value in msg.options:
            other.opt.add_option(OpaqueOption(OptionNumber(number), value))
        return bytes(other.encode())


def aiocoap_decode(raw: bytes) -> m.Message:
    other = aiocoap_message.Message.decode(raw)
    opts = tuple((int(o.number), bytes(o.encode())) for o in other.opt.option_list())
    return m.Message(int(other.mtype), int(other.code), other.mid, bytes(other.token), opts, bytes(other.payload))


@settings(max_examples=400, deadline=None)
@given(messages)
def test_encode_equals_aiocoap(msg: m.Message) -> None:
    assert m.encode(msg) == aiocoap_encode(msg)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_decode_of_aiocoap_and_back(msg: m.Message) -> None:
    raw = aiocoap_encode(msg)
    assert m.decode(raw) == msg
    assert aiocoap_decode(m.encode(msg)) == msg


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_raises_only_format_errors(raw: bytes) -> None:
    try:
        msg = m.decode(raw)
    except CoapFormatError:
        return
    assert m.encode(msg) == raw  # what decodes re-encodes to the same bytes (every extended form is canonical)


@pytest.mark.parametrize(("raw", "why"), [
    (b"\x40\x01", "shorter than a CoAP header"),
    (b"\x80\x01\x00\x01", "version 2"),
    (bytes([0x49, 1, 0, 1]) + b"\0" * 9, "token length 9"),
    (bytes([0x4F, 1, 0, 1]) + b"\0" * 15, "token length 15"),
    (b"\x44\x01\x00\x01ab", "token of 4 bytes truncated"),
    (b"\x40\x01\x00\x01\xbd", "option header truncated"),
    (b"\x40\x01\x00\x01\xbe\x01", "option header truncated"),
    (b"\x40\x01\x00\x01\xb5abc", "claims 5 bytes, 3 left"),
    (b"\x40\x01\x00\x01\xbe\xff\xff", "claims"),  # a 65,804-byte option in 7 bytes
    (b"\x40\x01\x00\x01\xf1a", "nibble 15"),
    (b"\x40\x45\x00\x01\xff", "payload marker without a payload"),
    (b"\x41\x00\x00\x01a", "empty message with a token"),
])
def test_malformed_is_a_clear_error(raw: bytes, why: str) -> None:
    with pytest.raises(CoapFormatError, match=why):
        m.decode(raw)


def test_codes_text_and_int() -> None:
    assert m.code_text(69) == "2.05" and m.code_int("2.05") == 69
    assert m.code_int("4.04") == 132 and m.code_text(132) == "4.04"
    assert m.code_int("GET") == 1
    for bad in ("2.5", "205", "8.00", "2.32", "x.05"):
        with pytest.raises(ValueError, match="not a CoAP code"):
            m.code_int(bad)


def test_uint_and_block_values() -> None:
    assert m.encode_uint(0) == b"" and m.encode_uint(255) == b"\xff" and m.encode_uint(256) == b"\x01\x00"
    assert m.decode_uint(b"\x01\x00") == 256
    assert m.decode_block(m.encode_block(0, True, 6)) == (0, True, 6)
    assert m.decode_block(m.encode_block(70000, False, 2)) == (70000, False, 2)
    assert m.encode_block(0, False, 0) == b""
    with pytest.raises(CoapFormatError, match="reserved SZX"):
        m.decode_block(b"\x07")
    with pytest.raises(CoapFormatError, match="at most 3"):
        m.decode_block(b"\0\0\0\x01")
    assert m.block_szx(16) == 0 and m.block_szx(1024) == 6
    with pytest.raises(ValueError, match="power of two"):
        m.block_szx(100)


def test_request_build_matches_aiocoap() -> None:
    req = Request.build("POST", "/sensors/temp", ("unit=C", "id=7"), b"21.5", content_format=0, accept=50)
    raw = req.encode(m.CON, 0x1234, b"\x01\x02\x03\x04", ((m.OBSERVE, b""), (m.BLOCK2, m.encode_block(0, False, 2))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = aiocoap_message.Message(code=Code.POST, uri_path=("sensors", "temp"), uri_query=("unit=C", "id=7"),
                                      payload=b"21.5", content_format=0, accept=50, observe=0)
        ref.mtype, ref.mid, ref.token = Type.CON, 0x1234, b"\x01\x02\x03\x04"
        from aiocoap.optiontypes import BlockOption
        ref.opt.block2 = BlockOption.BlockwiseTuple(0, False, 2)
        assert raw == bytes(ref.encode())
    assert Request.ping_request().encode(m.CON, 7, b"") == b"\x40\x00\x00\x07"
    with pytest.raises(ValueError, match="unknown CoAP method"):
        Request.build("BREW")
