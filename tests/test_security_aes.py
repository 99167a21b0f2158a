"""OSGP-AES-128-PSK (meter_emu/security/aes.py, designed): frozen known answers of our mode, the
public test vectors of the primitives it uses (RFC 4493 AES-CMAC, NIST SP 800-38C AES-CCM), an
independent re-computation from AES-ECB alone (so the frozen vectors are not self-referential),
and refusals: tampering, wrong key / direction / sequence / context, malformed input."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.security import aes
from meter_emu.security.aes import MAC_SIZE, TAG_SIZE, AesPsk, cmac, derive_key, image_mac

H = bytes.fromhex
PSK = bytes(range(16))
SEQUENCE = 0x77635B91  # the MEP guide's example sequence number (MEP p.48)
READ_ET54 = H("3F 0836 000052 0008")  # partial read ET54 offset 82, 8 bytes (key usage counts)
ANSWER = H("00 0008 2a00000007000000 00")
CONTEXT = H("01 0203")  # e.g. PLC subnet / node of the client


# ---- independent AES-ECB constructions (SP 800-38B CMAC, SP 800-38C CCM) -----------------------

def ecb(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _double(block: bytes) -> bytes:
    value = int.from_bytes(block, "big") << 1
    if value >> 128:
        value = (value & (2**128 - 1)) ^ 0x87
    return value.to_bytes(16, "big")


def hand_cmac(key: bytes, data: bytes) -> bytes:
    k1 = _double(ecb(key, bytes(16)))
    k2 = _double(k1)
    blocks = [data[i:i + 16] for i in range(0, len(data), 16)] or [b""]
    last = blocks[-1]
    blocks[-1] = xor(last, k1) if len(last) == 16 else xor(last + b"\x80" + bytes(15 - len(last)),
                                                           k2)
    state = bytes(16)
    for block in blocks:
        state = ecb(key, xor(state, block))
    return state


def hand_ccm(key: bytes, nonce: bytes, aad: bytes, payload: bytes, tag_size: int) -> bytes:
    q = 15 - len(nonce)
    flags = (0x40 if aad else 0) | (tag_size - 2) // 2 << 3 | (q - 1)
    b0 = bytes([flags]) + nonce + len(payload).to_bytes(q, "big")
    encoded = (len(aad).to_bytes(2, "big") + aad) if aad else b""
    pad = lambda data: data + bytes(-len(data) % 16)  # noqa: E731
    stream = b0 + pad(encoded) + pad(payload)
    mac = bytes(16)
    for i in range(0, len(stream), 16):
        mac = ecb(key, xor(mac, stream[i:i + 16]))
    counter = lambda i: bytes([q - 1]) + nonce + i.to_bytes(q, "big")  # noqa: E731
    keystream = b"".join(ecb(key, counter(i)) for i in range(1, len(payload) // 16 + 2))
    return xor(payload, keystream) + xor(mac[:tag_size], ecb(key, counter(0)))


def kdf(psk: bytes, label: bytes) -> bytes:
    return hand_cmac(psk, b"\x01" + label + b"\x00OSGP-AES-128-PSK\x00\x00\x00\x80")


# ---- the primitives against their public vectors ----------------------------------------------

RFC4493_KEY = H("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MESSAGE = H("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51"
                    "30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710")


@pytest.mark.parametrize("length, expected", [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
])
def test_aes_cmac_rfc4493_examples(length, expected):
    message = RFC4493_MESSAGE[:length]
    assert cmac(RFC4493_KEY, message) == H(expected)  # the call aes.py makes
    assert hand_cmac(RFC4493_KEY, message) == H(expected)  # and the test's own construction


def test_cmac_subkeys_rfc4493():
    k1 = _double(ecb(RFC4493_KEY, bytes(16)))
    assert k1 == H("fbeed618357133667c85e08f7236a8de")
    assert _double(k1) == H("f7ddac306ae266ccf90bc11ee46d513b")


CCM_KEY = H("404142434445464748494a4b4c4d4e4f")


@pytest.mark.parametrize("nonce, aad, payload, tag_size, expected", [
    # NIST SP 800-38C Appendix C, Examples 1, 2 and 3
    ("10111213141516", "0001020304050607", "20212223", 4, "7162015b4dac255d"),
    ("1011121314151617", "000102030405060708090a0b0c0d0e0f",
     "202122232425262728292a2b2c2d2e2f", 6, "d2a1f0e051ea5f62081a7792073d593d1fc64fbfaccd"),
    ("101112131415161718191a1b", "000102030405060708090a0b0c0d0e0f10111213",
     "202122232425262728292a2b2c2d2e2f3031323334353637", 8,
     "e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5484392fbc1b09951"),
])
def test_aes_ccm_sp800_38c_examples(nonce, aad, payload, tag_size, expected):
    sealed = AESCCM(CCM_KEY, tag_length=tag_size).encrypt(H(nonce), H(payload), H(aad))
    assert sealed == H(expected)
    assert hand_ccm(CCM_KEY, H(nonce), H(aad), H(payload), tag_size) == H(expected)


# ---- our mode: frozen known answers -----------------------------------------------------------

def test_known_answers_of_the_mode():
    psk = AesPsk(PSK)
    request = psk.seal_request(READ_ET54, SEQUENCE)
    assert request == H("741a196bb3204952 77635b91 063b6dd8fec82bbe")
    assert psk.seal_request(READ_ET54, SEQUENCE, CONTEXT) == H(
        "741a196bb3204952 77635b91 161ee3d243baa415")  # same keystream, other tag
    assert psk.seal_response(ANSWER, SEQUENCE) == H(
        "46af83a42f33beb48d6f6e2a de60a61e3569115c")
    assert psk.seal_resync(SEQUENCE + 1) == H("0c 77635b92 109b1e454b7cac04")
    assert image_mac(PSK, b"firmware image") == H("161f057c9c20c311dcde2292462c27cf")


def test_the_known_answers_recomputed_from_aes_ecb():
    """The frozen frames above, rebuilt from the design in aes.py's docstring with AES-ECB
    only: SP 800-108 KDF over a hand-made CMAC, CCM's CBC-MAC and counter mode by hand."""
    k_request, k_response = kdf(PSK, b"request"), kdf(PSK, b"response")
    assert derive_key(PSK, b"request") == k_request
    seq = SEQUENCE.to_bytes(4, "big")
    request = hand_ccm(k_request, b"\x01" + bytes(8) + seq, seq, READ_ET54, TAG_SIZE)
    assert AesPsk(PSK).seal_request(READ_ET54, SEQUENCE) == request[:-8] + seq + request[-8:]
    response = hand_ccm(k_response, b"\x02" + bytes(8) + seq, seq + CONTEXT, ANSWER, TAG_SIZE)
    assert AesPsk(PSK).seal_response(ANSWER, SEQUENCE, CONTEXT) == response
    expected = (SEQUENCE + 1).to_bytes(4, "big")
    resync = hand_ccm(k_response, b"\x03" + bytes(8) + expected, b"\x0c" + expected, b"",
                      TAG_SIZE)
    assert AesPsk(PSK).seal_resync(SEQUENCE + 1) == b"\x0c" + expected + resync
    assert image_mac(PSK, b"firmware image") == hand_cmac(kdf(PSK, b"image"), b"firmware image")


def test_frame_sizes_keep_the_digest_slot():
    apdu = bytes(range(83))  # a 95-byte secured request (D1: 1+2+3+2+75 + 4 + 8)
    sealed = AesPsk(PSK).seal_request(apdu, 1)
    assert len(sealed) == len(apdu) + 4 + TAG_SIZE and sealed[-12:-8] == b"\x00\x00\x00\x01"
    assert len(AesPsk(PSK).seal_response(b"\x00" * 87, 1)) == 95
    assert len(image_mac(PSK, b"")) == MAC_SIZE == 16
    assert aes.NONCE_SIZE == len(aes.nonce(aes.REQUEST, 5)) == 13


# ---- refusals -------------------------------------------------------------------------------

def test_round_trips_and_each_binding():
    psk, other = AesPsk(PSK), AesPsk(bytes(range(1, 17)))
    request = psk.seal_request(READ_ET54, SEQUENCE, CONTEXT)
    assert psk.open_request(request, CONTEXT) == (READ_ET54, SEQUENCE)
    assert psk.open_request(request) is None  # wrong context
    assert other.open_request(request, CONTEXT) is None  # wrong key
    moved = request[:-12] + (SEQUENCE + 1).to_bytes(4, "big") + request[-8:]
    assert psk.open_request(moved, CONTEXT) is None  # sequence number changed in transit
    response = psk.seal_response(ANSWER, SEQUENCE, CONTEXT)
    assert psk.open_response(response, SEQUENCE, CONTEXT) == ANSWER
    assert psk.open_response(response, SEQUENCE + 1, CONTEXT) is None  # wrong sequence
    assert psk.open_response(response, SEQUENCE, b"") is None
    assert other.open_response(response, SEQUENCE, CONTEXT) is None
    # wrong direction: a response is no request and a request no response (same key, same s)
    as_request = response[:-8] + SEQUENCE.to_bytes(4, "big") + response[-8:]
    assert psk.open_request(as_request, CONTEXT) is None
    assert psk.open_response(request[:-12] + request[-8:], SEQUENCE, CONTEXT) is None
    resync = psk.seal_resync(SEQUENCE + 1, CONTEXT)
    assert psk.open_resync(resync, CONTEXT) == SEQUENCE + 1
    assert psk.open_resync(resync) is None and other.open_resync(resync, CONTEXT) is None
    assert psk.open_response(resync, SEQUENCE + 1, CONTEXT) is None
    # the image key is no message key
    assert image_mac(PSK, READ_ET54) != image_mac(bytes(range(1, 17)), READ_ET54)


def test_every_flipped_bit_is_refused():
    psk = AesPsk(PSK)
    request = psk.seal_request(READ_ET54, SEQUENCE, CONTEXT)
    response = psk.seal_response(ANSWER, SEQUENCE, CONTEXT)
    resync = psk.seal_resync(SEQUENCE, CONTEXT)
    for bit in range(8 * len(request)):
        changed = bytearray(request)
        changed[bit // 8] ^= 1 << bit % 8
        assert psk.open_request(bytes(changed), CONTEXT) is None
    for bit in range(8 * len(response)):
        changed = bytearray(response)
        changed[bit // 8] ^= 1 << bit % 8
        assert psk.open_response(bytes(changed), SEQUENCE, CONTEXT) is None
    for bit in range(8 * len(resync)):
        changed = bytearray(resync)
        changed[bit // 8] ^= 1 << bit % 8
        assert psk.open_resync(bytes(changed), CONTEXT) is None


@pytest.mark.parametrize("message", [b"", b"\x00", bytes(12), bytes(13), bytes(200),
                                     bytes(70_000), None, "3F0836", 12, [1, 2, 3]])
def test_malformed_input_is_none_never_an_exception(message):
    psk = AesPsk(PSK)
    assert psk.open_request(message) is None
    assert psk.open_response(message, 1) is None
    assert psk.open_resync(message) is None


def test_bad_sequence_numbers_and_keys():
    psk = AesPsk(PSK)
    response = psk.seal_response(ANSWER, 0)
    for bad in (-1, 2**32, "1", None):
        assert psk.open_response(response, bad) is None
        with pytest.raises(ValueError):
            psk.seal_request(READ_ET54, bad)
    assert psk.open_response(psk.seal_response(ANSWER, 2**32 - 1), 2**32 - 1) == ANSWER
    for bad in (b"", bytes(12), bytes(15), bytes(17), bytes(32)):
        with pytest.raises(ValueError):
            AesPsk(bad)
    with pytest.raises(TypeError):
        AesPsk("0123456789abcdef")
    with pytest.raises(ValueError):
        psk.seal_request(bytes(aes.MAX_PAYLOAD + 1), 1)
    with pytest.raises(TypeError):  # bytes(5) would silently be five zero bytes
        psk.seal_response(5, 1)


def test_repr_hides_the_key():
    text = repr(AesPsk(b"SECRET-KEY-16-BY"))
    assert "SECRET" not in text and "16" in text


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), apdu=st.binary(min_size=1, max_size=300),
       answer=st.binary(min_size=1, max_size=300), sequence=st.integers(0, 2**32 - 1),
       context=st.binary(max_size=12))
def test_round_trip_property(key, apdu, answer, sequence, context):
    psk = AesPsk(key)
    assert psk.open_request(psk.seal_request(apdu, sequence, context), context) == (apdu,
                                                                                    sequence)
    sealed = psk.seal_response(answer, sequence, context)
    assert psk.open_response(sealed, sequence, context) == answer


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=120), sequence=st.integers(0, 2**32 - 1))
def test_arbitrary_bytes_never_open(data, sequence):
    psk = AesPsk(PSK)
    assert psk.open_request(data) is None
    assert psk.open_response(data, sequence) is None
    assert psk.open_resync(data) is None
