"""The secured OSGP APDU on the power line, both ends (plc/secure.py; DESIGN.md D1-D2), pinned
against the security core and the reference vectors (reference/osgp-app-layer.md section 11)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from meter_emu.plc.secure import (
    BroadcastSession,
    ClientSession,
    SecurityError,
    suite,
)
from meter_emu.security import AesPsk, OmaKey, PlcRc4
from meter_emu.security.aes import derive_key

KEY = b"OMA-emu-dflt"  # 12 bytes: the default profile's keys.oma
AES_KEY = b"AES-key-for-emu!"
READ_BT23 = bytes.fromhex("3F 0017 000000 000A")


def test_request_is_apdu_sequence_and_oma_digest():
    """D1: command ‖ parameters ‖ sequence (4, MSB) ‖ OMA digest of everything before it."""
    session = ClientSession(KEY, sequence=0x01020304)
    message = session.request(READ_BT23)
    body = READ_BT23 + bytes.fromhex("01020304")
    assert message == body + OmaKey(KEY).digest(body)
    assert session.sequence == 0x01020305


def test_reference_plc_vector_round_trips_through_both_ends():
    """Section 11.3 (digest) and 11.5 (CTF-style RC4) with key DF x 12: the 28-byte message is
    an 'APDU' of 24 bytes and sequence 0x00000011; the encrypted request is byte-exact: the
    section 11.5 ciphertext with its first byte, the command code, left in clear."""
    key = bytes([0xDF]) * 12
    message = bytes.fromhex("0202003000037f30ea6d0000000d0020980031c30008000000000011")
    apdu, sequence = message[:-4], int.from_bytes(message[-4:], "big")
    plain = ClientSession(key, sequence=sequence).request(apdu)
    assert plain == message + bytes.fromhex("dbe5cde507b1cb3d")
    encrypted = ClientSession(key, sequence=sequence, encrypt=True).request(apdu)
    assert encrypted == bytes.fromhex(
        "02 2847cf97fd90baa0262c509af1c062e2fd3af5adc0dcc4b252f11b dbe5cde507b1cb3d")
    for wire in (plain, encrypted):  # the meter's end opens both
        opened = suite(key).open_request(wire)
        assert opened[:2] == (apdu, sequence)


def test_response_digest_continues_the_request_state_by_hand():
    """The response digest is the OMA digest over request ‖ response (MEP App. A recipe)."""
    client = ClientSession(KEY, sequence=7)
    request = client.request(READ_BT23)
    apdu, sequence, exchange = suite(KEY).open_request(request)
    response = bytes.fromhex("00000A") + bytes(range(10))
    sealed = exchange.seal(response)
    assert sealed == response + OmaKey(KEY).digest(request[:-8] + response)
    assert client.response(sealed) == response


def test_pinned_frame_for_the_default_key():
    """One frame pinned byte for byte (computed once from the security core: a regression pin
    for the D1 layout with the default profile's key)."""
    client = ClientSession(KEY, sequence=0)
    assert client.request(READ_BT23).hex() == "3f0017000000000a000000008b173b80ae2297a2"
    assert client.response(bytes.fromhex("00000a00000000000000000000e904acde375542ea")) \
        == bytes.fromhex("00000a") + bytes(10)


def test_encrypted_request_gets_an_encrypted_response_continuing_the_stream():
    client = ClientSession(KEY, sequence=5, encrypt=True)
    request = client.request(READ_BT23)
    body = READ_BT23 + (5).to_bytes(4, "big")
    tag = OmaKey(KEY).digest(body)
    stream = PlcRc4(KEY).stream(tag)
    # RC4(K_base ^ digest) over command..seq; the command code stays in clear
    assert request == body[:1] + stream.process(body)[1:] + tag
    apdu, sequence, exchange = suite(KEY).open_request(request)
    assert (apdu, sequence) == (READ_BT23, 5)
    response = bytes.fromhex("00000A") + bytes(range(10))
    sealed = exchange.seal(response)
    assert sealed[:-8] == stream.process(response)  # the same stream, continued
    assert sealed[-8:] == OmaKey(KEY).digest(body + response)  # digest of the plaintext
    assert client.response(sealed) == response


def test_aes_request_and_response_are_the_aes_psk_seal():
    client = ClientSession(AES_KEY, mode="aes", sequence=9)
    request = client.request(READ_BT23)
    psk = AesPsk(AES_KEY)
    assert request == READ_BT23[:1] + psk.seal_request(READ_BT23[1:], 9, READ_BT23[:1])
    assert READ_BT23[1:] not in request  # parameters encrypted, command code in clear
    apdu, sequence, exchange = suite(AES_KEY, "aes").open_request(request)
    assert (apdu, sequence) == (READ_BT23, 9)
    response = bytes.fromhex("000002BEEF")
    assert exchange.seal(response) == psk.seal_response(response, 9)
    assert client.response(exchange.seal(response)) == response


@pytest.mark.parametrize("mode,key", [("rc4", KEY), ("aes", AES_KEY)])
def test_sequence_refusals_are_adopted_by_the_client(mode, key):
    for code in (0x0C, 0x1F):
        client = ClientSession(key, mode=mode, sequence=3)
        *_, exchange = suite(key, mode).open_request(client.request(READ_BT23))
        answer = exchange.refuse(code, 0x77635B90)
        assert answer[:5] == bytes([code]) + bytes.fromhex("77635B90")  # in clear (AES)
        assert client.response(answer) == bytes([code])
        assert client.sequence == 0x77635B90
    if mode == "aes":  # the AES answers are AesPsk's resync frame (0x1F: context 1F)
        assert exchange.refuse(0x0C, 5) == AesPsk(key).seal_resync(5)


@pytest.mark.parametrize("mode,key", [("rc4", KEY), ("aes", AES_KEY)])
def test_tampered_or_foreign_responses_raise(mode, key):
    client = ClientSession(key, mode=mode)
    *_, exchange = suite(key, mode).open_request(client.request(READ_BT23))
    good = exchange.seal(b"\x00\x00\x01\x05")
    for bad in (good[:-1] + bytes([good[-1] ^ 1]), bytes([good[0] ^ 0x80]) + good[1:],
                good[:4], b""):
        with pytest.raises(SecurityError):
            client.response(bad)
    assert client.response(good) == b"\x00\x00\x01\x05"  # a forgery did not spoil the state
    with pytest.raises(SecurityError):  # answered once: nothing waits any more
        client.response(good)


def test_digest_error_is_a_security_error_with_its_code():
    client = ClientSession(KEY)
    client.request(READ_BT23)
    with pytest.raises(SecurityError) as raised:
        client.response(b"\x0b")
    assert raised.value.code == 0x0B


def test_command_code_is_authenticated_though_in_clear():
    """Routing reads the first byte; changing it must break the seal in both modes."""
    for mode, key in (("rc4", KEY), ("aes", AES_KEY)):
        for encrypt in (False, True):
            message = ClientSession(key, mode=mode, encrypt=encrypt).request(READ_BT23)
            assert message[0] == 0x3F
            assert suite(key, mode).open_request(message)[0] == READ_BT23
            assert suite(key, mode).open_request(b"\x30" + message[1:]) is None


def test_wrong_key_does_not_open():
    message = ClientSession(b"wrong-key-12").request(READ_BT23)
    assert suite(KEY).open_request(message) is None
    aes = ClientSession(b"wrong-aes-key-16", mode="aes").request(READ_BT23)
    assert suite(AES_KEY, "aes").open_request(aes) is None


def test_broadcast_layout_rc4_and_aes():
    """Designed: command ‖ parameters ‖ group (2, MSB) ‖ sequence (4) ‖ digest (8)."""
    write = bytes.fromhex("4F 0007 000000 0001 AA")
    session = BroadcastSession(KEY, group=0x1234, sequence=41)
    message = session.request(write)
    body = write + bytes.fromhex("1234") + (41).to_bytes(4, "big")
    assert message == body + OmaKey(KEY).digest(body)
    assert session.sequence == 42
    aes = BroadcastSession(AES_KEY, group=0x1234, sequence=41, mode="aes").request(write)
    broadcast_psk = AesPsk(derive_key(AES_KEY, b"broadcast"))
    assert aes == write[:1] + broadcast_psk.seal_request(write[1:] + bytes.fromhex("1234"), 41,
                                                         write[:1])
    assert suite(AES_KEY, "aes").open_request(aes) is None  # never a unicast request


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_meter_end_survives_arbitrary_bytes(data):
    for opener in (suite(KEY), suite(AES_KEY, "aes"), suite(AES_KEY, "aes", True)):
        opened = opener.open_request(data)
        assert opened is None or isinstance(opened[0], bytes)
    client = ClientSession(KEY)
    client.request(READ_BT23)
    try:
        client.response(data)
    except SecurityError:
        pass
