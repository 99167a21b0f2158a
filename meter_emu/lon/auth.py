"""ISO/IEC 14908.1 authentication (reference/lower-layers.md section 4.5): the 8-byte reply a
sender computes from the receiver's 8-byte random challenge, the APDU and the domain key.

It is the round function of the OMA digest (meter_emu.security.digest) with the challenge as the
initial state and the data consumed from its last byte backwards, so we reuse the security core:

* classic, 48-bit key (6 bytes): 48-byte blocks over the reversed APDU;
* OMA, 96-bit key (12 bytes): 144-byte blocks (the key walked 18 times, K[i mod 12]) over the
  reversed ``OMA address block || APDU``.

One difference from the digest: an empty APDU consumes no block at all (the reply is the
challenge), where the digest would hash one zero block. An APDU always has its code byte, so this
only matters for the literal definition the tests pin.

The OMA address block is 9 bytes, all 0xFF where unused: either the 6-byte Neuron ID of the
addressed node (Neuron-ID addressing), or the logical address ``domain ID (6 bytes) || domain
length || subnet, node`` (node byte with bit 7 clear) or ``|| group, 0xFF``. The public stack's
union holds 6 + 1 + 2 bytes, so 9, not the 21 bytes the fact sheet mentions. A domain ID shorter
than 6 bytes is padded with zeros (``designed``: the public stack hashes whatever padding the
network manager left in its domain table; zeros is what a fresh table holds).
"""

from __future__ import annotations

from functools import lru_cache

from ..security.digest import OmaKey

__all__ = ["OMA_ADDRESS_SIZE", "oma_address", "reply"]

OMA_ADDRESS_SIZE = 9


@lru_cache(maxsize=1024)
def _prepared(key: bytes) -> OmaKey:
    return OmaKey(key)


def reply(key: bytes, challenge: bytes, apdu: bytes, *, oma_address: bytes | None = None) -> bytes:
    """The 8 crypto bytes answering ``challenge`` for ``apdu`` under a 6-byte key, or under a
    12-byte OMA key with the 9-byte ``oma_address`` block (all 0xFF when not given)."""
    key = bytes(key)
    if len(challenge) != 8:
        raise ValueError(f"a challenge is 8 bytes, not {len(challenge)}")
    if len(key) == 12:
        block = b"\xff" * OMA_ADDRESS_SIZE if oma_address is None else bytes(oma_address)
        if len(block) != OMA_ADDRESS_SIZE:
            raise ValueError(f"the OMA address block is {OMA_ADDRESS_SIZE} bytes")
        data = block + bytes(apdu)
    elif len(key) == 6:
        data = bytes(apdu)
    else:
        raise ValueError(f"an authentication key is 6 or 12 bytes, not {len(key)}")
    if not data:
        return bytes(challenge)
    return _prepared(key).digest(data[::-1], initial_state=bytes(challenge))


def oma_address(*, neuron_id: bytes | None = None, domain: bytes = b"", subnet: int | None = None,
                node: int | None = None, group: int | None = None) -> bytes:
    """The 9-byte OMA address block of the message being authenticated (see module doc)."""
    if neuron_id is not None:
        return bytes(neuron_id) + b"\xff" * (OMA_ADDRESS_SIZE - len(neuron_id))
    head = bytes(domain).ljust(6, b"\x00") + bytes((len(domain),))
    if group is not None:
        return head + bytes((group, 0xFF))
    if subnet is not None and node is not None:
        return head + bytes((subnet, node & 0x7F))
    return head + b"\xff\xff"
