"""A pcap of the CN/IP channel that ``tshark -r FILE`` decodes with no ``-d`` option.

Each record is Ethernet / IPv4 / UDP carrying one CN/IP packet (linktype 1). Wireshark hands
CN/IP to its LON dissector only on UDP 1628/1629 (reference/lower-layers.md section 11.1), so
the emulator's side is always written as port 1628 whatever port it really bound (``--cnip
udp://127.0.0.1:0``); the peer's side keeps its real address.

designed: frames the meters send are written once, as they go onto the shared medium: from the
endpoint (its IP, port 1628) to the limited broadcast 255.255.255.255:1628, whether they then go
to one CN/IP peer, several, or only to other meters in this process. Frames received from a peer
are written from the peer's address to the endpoint's. Every record is flushed at once, so a
test (or ``tshark``) can read the file while the emulator runs.
"""

from __future__ import annotations

import socket
import struct
import time

CNIP_PORT = 1628
CHANNEL = ("255.255.255.255", CNIP_PORT)
_GLOBAL = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # linktype 1: Ethernet


def _ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(ip: bytes) -> bytes:
    """A locally administered MAC made from the IP (02:00:a.b.c.d), so each host keeps one."""
    if ip == b"\xff\xff\xff\xff":
        return b"\xff" * 6
    return b"\x02\x00" + ip


class PcapWriter:
    """Append CN/IP packets to ``path`` (created or truncated) as Ethernet/IPv4/UDP frames."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - kept open for the run, closed by close()
        self.file.write(_GLOBAL)
        self.file.flush()
        self.records = 0
        self._ip_id = 0

    def write(self, payload: bytes, src: tuple, dst: tuple, when: float | None = None) -> None:
        """One UDP datagram ``src`` -> ``dst`` ((ip, port) each) carrying ``payload``."""
        if self.file.closed:
            return
        src_ip, dst_ip = socket.inet_aton(_host(src[0])), socket.inet_aton(_host(dst[0]))
        udp = struct.pack(">HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), self._ip_id, 0x4000, 64,
                         17, 0, src_ip, dst_ip)
        ip = ip[:10] + struct.pack(">H", _ipv4_checksum(ip)) + ip[12:]
        frame = _mac(dst_ip) + _mac(src_ip) + b"\x08\x00" + ip + udp
        when = time.time() if when is None else when
        seconds = int(when)
        record = struct.pack("<IIII", seconds, int((when - seconds) * 1e6), len(frame),
                             len(frame))
        self.file.write(record + frame)
        self.file.flush()
        self.records += 1

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


def _host(host: str) -> str:
    """IPv4 text for the record ('' and '0.0.0.0' bound sockets show as 127.0.0.1)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        return "127.0.0.1"
