"""OSGP-AES-128-PSK, the security mode ET04.127 = 2 selects (MEP p.64-66): designed.

The normative format (ETSI TS 104 001 V2.x) is not public; the public hints (CLC/TS 50586 cites
NIST SP 800-38C AES-CCM and RFC 5433 AES-CMAC) are all we follow. The full design, its nonce,
key derivation and frame layout, is written down once, here. (Contract: filled in by the
security work of issue 7.)
"""

from __future__ import annotations

KEY_SIZE = 16
TAG_SIZE = 8  # the frame keeps the 8-byte slot of the OMA digest
MAC_SIZE = 16  # the firmware image MAC (MEP p.243: "Image MAC UINT8[16]")


class AesPsk:
    """One 16-byte pre-shared key; sans-I/O sealing and opening of secured APDU messages.

    A request message is ``ciphertext(APDU) | sequence (4, MSB, in clear) | tag (8)``; the
    response to it is ``ciphertext(response) | tag (8)``, bound to the request's sequence
    number and direction. ``context`` binds extra clear data (e.g. PLC addressing) into the tag.
    """

    def __init__(self, key: bytes):
        raise NotImplementedError

    def seal_request(self, apdu: bytes, sequence: int, context: bytes = b"") -> bytes:
        raise NotImplementedError

    def open_request(self, message: bytes, context: bytes = b"") -> tuple[bytes, int] | None:
        """(APDU, sequence number), or None when the message does not authenticate."""
        raise NotImplementedError

    def seal_response(self, response: bytes, sequence: int, context: bytes = b"") -> bytes:
        raise NotImplementedError

    def open_response(self, message: bytes, sequence: int, context: bytes = b"") -> bytes | None:
        raise NotImplementedError


def image_mac(key: bytes, image: bytes) -> bytes:
    """The 16-byte MAC over a firmware image that EP10 / EP19 type 9 check in AES mode."""
    raise NotImplementedError
