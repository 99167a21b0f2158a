"""Security core of the secured OSGP APDU (PLC) and of the MEP port: the OMA digest (8-byte keyed
authenticator, 6/12/16-byte keys) with its EN 14908 variant, and RC4 encryption keyed from the
digest (MEP scheme: documented in the MEP guide App. A/B; PLC scheme: public exercise code only,
swappable), and the designed OSGP-AES-128-PSK mode (aes.py). Sans-I/O, bytes in and bytes out;
see reference/osgp-app-layer.md section 5."""

from .aes import AesPsk, image_mac
from .digest import (
    DIGEST_SIZE,
    KEY_LENGTHS,
    OmaDigest,
    OmaKey,
    block_size,
    en14908_digest,
    oma_digest,
)
from .rc4 import (
    MEP_CONST_KEY,
    PLC_R1,
    PLC_R2,
    RC4_BACKEND,
    DigestMismatch,
    MepRc4,
    PlcRc4,
    Rc4Stream,
    mep_encrypt_key,
    mix_digest,
    plc_base_key,
    rc4_crypt,
)

__all__ = [
    "AesPsk",
    "DIGEST_SIZE",
    "KEY_LENGTHS",
    "MEP_CONST_KEY",
    "PLC_R1",
    "PLC_R2",
    "RC4_BACKEND",
    "DigestMismatch",
    "MepRc4",
    "OmaDigest",
    "OmaKey",
    "PlcRc4",
    "Rc4Stream",
    "block_size",
    "en14908_digest",
    "image_mac",
    "mep_encrypt_key",
    "mix_digest",
    "oma_digest",
    "plc_base_key",
    "rc4_crypt",
]
