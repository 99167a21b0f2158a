"""The U50 serial link (phy/u50.py): how many LPDU-sized messages per second one core moves
through a host link and an NI link in memory (encode, escape, parse, check, ACK), against what
a 115200-baud line can carry. Run: ``python3 benchmarks/bench_u50.py``.

The line's own rate: a 60-byte LPDU message is 4 (CpMsg) + 1 + 1 + 60 + 1 bytes, plus the
4-byte CpNull that ACKs it; at 10 bits per byte that is 11,520 / 71 ≈ 162 messages/s one way.
"""

from __future__ import annotations

import machine  # benchmarks/machine.py (scripts run from this folder)

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meter_emu.phy.u50 import U50Link  # noqa: E402


def main() -> None:
    print(machine.describe())
    rng = random.Random(1)
    payloads = [bytes(rng.randrange(256) for _ in range(60)) for _ in range(2000)]
    host, ni = U50Link("host"), U50Link("ni", rx_capacity=10**9)
    start = time.perf_counter()
    now = 0.0
    for payload in payloads:
        host.send(0x12, payload, now=now)
        ni.feed(host.take_output(), now)
        host.feed(ni.take_output(), now)
    elapsed = time.perf_counter() - start
    assert len(ni.take_messages()) == len(payloads) and host.idle
    rate = len(payloads) / elapsed
    line = 11520 / (4 + 1 + 1 + 60 + 1 + 4)
    print(f"U50 link, 60-byte LPDUs host -> NI, ACKed one by one: {rate:,.0f} messages/s "
          f"per core ({rate / line:,.0f}x what 115200 baud carries, {line:.0f}/s)")


if __name__ == "__main__":
    main()
