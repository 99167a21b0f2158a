"""Benchmark of the OMA digest (and MEP RC4, and OSGP-AES-128-PSK) on the per-request hot path.
Not a test: prints digests per second for a typical 30-byte MEP request with 16-, 12- and 6-byte
keys, AES seal + open per second for a 95-byte APDU, and the machine it ran on.

    python benchmarks/bench_digest.py [--seconds 0.5]

Figures: one-shot digest with a prepared key (``OmaKey.digest``), the streaming object
(``OmaDigest(key, msg).digest()``), a whole exchange as a meter does it (request digest, then the
response digest continuing the request's state), a naive per-bit loop for comparison, and RC4 per
MEP exchange (keying + 30 + 30 bytes). AES: a 95-byte request APDU (the D1 maximum) sealed
and opened, a whole exchange (request and response each sealed and opened), and the key set-up
(three CMAC derivations)."""

from __future__ import annotations

import machine  # benchmarks/machine.py (scripts run from this folder)

import argparse
import timeit

import cryptography

from meter_emu.security import AesPsk, MepRc4, OmaDigest, OmaKey, block_size
from meter_emu.security.rc4 import RC4_BACKEND

# a 30-byte MEP request message (what the digest covers): partial write ET50, 19 data bytes, seq
REQUEST = bytes.fromhex("4F0832000000001300") + bytes(range(1, 18)) + bytes.fromhex("77636E2F")
RESPONSE = b"\x00"
assert len(REQUEST) == 30


def naive_digest(key: bytes, message: bytes) -> bytes:
    """The section 5.1 pseudocode, bit by bit (baseline only)."""
    length = len(key)
    iterations = length if length == 6 else length + length // 2
    size = 8 * iterations
    padded = message + bytes(-len(message) % size or (size if not message else 0))
    a = [0] * 8
    for start in range(0, len(padded), size):
        for i in range(iterations):
            kb = key[i % length]
            for t in range(8):
                j = 7 - t
                x = ~(a[j] + j) & 0xFF
                f = (x << 1 | x >> 7) & 0xFF if (kb >> t) & 1 else -((x >> 1 | x << 7) & 0xFF)
                a[j] = (a[(j + 1) % 8] + padded[start + 8 * i + t] + f) & 0xFF
    return bytes(a)


def rate(fn, seconds: float) -> float:
    """Calls per second, best of 5 runs of about ``seconds`` / 5 each."""
    number = 1
    while True:
        t = timeit.timeit(fn, number=number)
        if t > seconds / 20:
            break
        number *= 2
    number = max(1, int(number * (seconds / 5) / t))
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return number / best


def exchange(key: OmaKey) -> tuple[bytes, bytes]:
    d = OmaDigest(key, REQUEST)
    saved = d.copy()
    request_tag = d.digest()
    saved.update(RESPONSE)
    return request_tag, saved.digest()


def report(label: str, per_second: float, unit: str) -> None:
    print(f"  {label:<36} {per_second:>10,.0f} {unit}")


def bench_key(raw: bytes, seconds: float) -> None:
    key = OmaKey(raw)
    key.digest(REQUEST)  # compile the unrolled block functions outside the timing
    exchange(key)
    assert key.digest(REQUEST) == naive_digest(raw, REQUEST)
    print(f"\n{len(raw)}-byte key ({block_size(len(raw))}-byte blocks):")
    report("OmaKey.digest(msg)", rate(lambda: key.digest(REQUEST), seconds), "digests/s")
    report("OmaDigest(key, msg).digest()",
           rate(lambda: OmaDigest(key, REQUEST).digest(), seconds), "digests/s")
    report("exchange: request + response tag", rate(lambda: exchange(key), seconds),
           "exchanges/s")
    report("OmaKey(raw) (key set-up)", rate(lambda: OmaKey(raw), seconds), "keys/s")
    report("naive per-bit loop (baseline)",
           rate(lambda: naive_digest(raw, REQUEST), seconds / 2), "digests/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per figure (default 0.5)")
    args = parser.parse_args()

    print(machine.describe(f" | cryptography {cryptography.__version__}, "
                           f"RC4 backend {RC4_BACKEND}"))
    print(f"message: {len(REQUEST)}-byte MEP request; one core; each figure is the best of 5 runs")
    for length in (16, 12, 6):
        bench_key(bytes(range(0x31, 0x31 + length)), args.seconds)

    mep = MepRc4(bytes(range(16)))
    tag = bytes(8)

    def rc4_exchange() -> None:
        stream = mep.stream(tag)
        stream.process(REQUEST)
        stream.process(REQUEST)

    print("\nMEP RC4 (cryptography ARC4):")
    report("key set-up + 30 B + 30 B", rate(rc4_exchange, args.seconds), "exchanges/s")
    bench_aes(args.seconds)


APDU_95 = bytes(range(83))  # + 4-byte sequence + 8-byte tag = a 95-byte secured request


def bench_aes(seconds: float) -> None:
    psk = AesPsk(bytes(range(16)))
    sealed = psk.seal_request(APDU_95, 1)
    assert len(sealed) == 95 and psk.open_request(sealed) == (APDU_95, 1)
    answer = bytes(87)

    def seal_open() -> None:
        psk.open_request(psk.seal_request(APDU_95, 1))

    def exchange_aes() -> None:
        apdu, sequence = psk.open_request(psk.seal_request(APDU_95, 7))
        psk.open_response(psk.seal_response(answer, sequence), sequence)

    print("\nOSGP-AES-128-PSK (AES-CCM, cryptography / OpenSSL), 95-byte APDU:")
    report("seal + open request", rate(seal_open, seconds), "requests/s")
    report("exchange: request + response", rate(exchange_aes, seconds), "exchanges/s")
    report("AesPsk(key) (key set-up)", rate(lambda: AesPsk(bytes(range(16))), seconds),
           "keys/s")


if __name__ == "__main__":
    main()
