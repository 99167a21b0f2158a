"""A C12.18 client for the optical port: the other end of ports/optical (link + PSEM).

Three parts, so that a head-end or a test can take the one it needs:

* ``PacketParser`` (sans-I/O): bytes from the meter in, link events out (ACK, NAK, a packet,
  a packet with a bad CRC). Packets are framed with the server's own ``packetize`` (same layout,
  CRC-16/X-25 from meter_emu/crc.py: reference/osgp-app-layer.md section 3.2).
* transports: ``open_transport(url)`` for ``tcp://HOST:PORT`` / ``socket://HOST:PORT``
  (a socket) or a device path (a pty slave or ``/dev/ttyUSB0``, 9600 8N1 with pyserial), and
  ``LinkTransport`` for a link object in the same process. Each has ``write(bytes)``,
  ``read(timeout) -> bytes`` (b"" when nothing came) and ``close()``.
* ``OpticalClient``: one request at a time, blocking. The link rules: each packet waits for
  the meter's ACK and is sent again on NAK or silence (3 tries), the toggle bit flips per new
  packet, a request larger than the negotiated packet is split (multi-packet, sequence =
  packets still to come), response packets are ACKed (NAKed when their CRC fails) and
  reassembled, and a packet repeated by the meter (same bytes: our ACK was lost) is ACKed
  and dropped. On top, the PSEM services: ident, negotiate, logon, security (20-byte
  password), read / partial read (data checksum checked), write / partial write, procedures
  through BT07/BT08 with the procedure sequence number (PSN), logoff, terminate.

Errors are exceptions: ``LinkError`` (no answer, connection gone: the meter may not have seen
the request), ``PsemError`` (the meter answered a PSEM error code: it did see it).
"""

from __future__ import annotations

import logging
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass

from ..crc import crc16
from ..device.errors import ResponseCode
from ..ports.optical.link import (ACK, CTRL_FIRST, CTRL_MULTI, HEADER, MAX_LENGTH,
                                  NAK, OVERHEAD, STP, describe, packetize)
from ..profile import key_text_bytes

log = logging.getLogger(__name__)

PASSWORD_SIZE = 20
USER_NAME_SIZE = 10
BT07, BT08 = 7, 8
DEFAULT_PACKET_SIZE = 64  # before Negotiate, both sides use it (C12.18)


class ClientError(Exception):
    """Anything that stops a client request; the message says what and why."""


class LinkError(ClientError):
    """The link failed: no ACK, no response, a closed connection."""


class PsemError(ClientError):
    """The meter answered a PSEM service with an error code."""

    def __init__(self, service: str, code: int):
        try:
            name = ResponseCode(code).name
        except ValueError:
            name = "unknown"
        super().__init__(f"{service}: meter answered {name} (0x{code:02X})")
        self.service, self.code = service, code


def parse_password(text: str) -> bytes:
    """A key as the profiles write it: up to 20 ASCII characters, or ``hex:`` and up to 40 hex
    digits; NUL-padded to the 20 bytes of the security service."""
    try:
        raw = key_text_bytes(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} {exc}") from None
    if len(raw) > PASSWORD_SIZE:
        raise ValueError(f"a key has at most {PASSWORD_SIZE} bytes, not {len(raw)}")
    return raw.ljust(PASSWORD_SIZE, b"\0")


# ---- sans-I/O link parsing ---------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    ctrl: int
    seq: int
    data: bytes
    raw: bytes
    crc_ok: bool = True


class PacketParser:
    """Bytes from the meter -> ``ACK``, ``NAK`` or ``Packet`` events, in order. Bytes outside a
    packet other than ACK/NAK are noise and dropped."""

    def __init__(self):
        self._rx = bytearray()

    def feed(self, data: bytes) -> list:
        events: list = []
        for byte in data:
            if not self._rx:
                if byte == STP:
                    self._rx.append(byte)
                elif byte in (ACK, NAK):
                    events.append(byte)
                continue
            self._rx.append(byte)
            if len(self._rx) == HEADER and int.from_bytes(self._rx[4:6], "big") > MAX_LENGTH:
                self._rx.clear()  # not a packet start after all
                continue
            if len(self._rx) >= HEADER and len(self._rx) == HEADER + self._length() + 2:
                raw, self._rx = bytes(self._rx), bytearray()
                crc_ok = crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")
                events.append(Packet(raw[2], raw[3], raw[HEADER:-2], raw, crc_ok))
        return events

    def _length(self) -> int:
        return int.from_bytes(self._rx[4:6], "big")

    def reset(self) -> None:
        self._rx.clear()


# ---- transports ---------------------------------------------------------------------------


class SocketTransport:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise LinkError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise LinkError(f"connection lost while sending: {exc}") from None

    def read(self, timeout: float) -> bytes:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except (socket.timeout, TimeoutError):
            return b""
        except OSError as exc:
            raise LinkError(f"connection lost while receiving: {exc}") from None
        if not data:
            raise LinkError("the meter closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


class SerialTransport:
    """A pty slave or a serial device, 9600 8N1 (the optical port's speed before Negotiate)."""

    def __init__(self, path: str, baudrate: int = 9600):
        import serial

        try:
            self.port = serial.Serial(path, baudrate=baudrate, timeout=0)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"cannot open {path}: {exc}") from None

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read(self, timeout: float) -> bytes:
        self.port.timeout = max(timeout, 0.001)
        first = self.port.read(1)
        if not first:
            return b""
        self.port.timeout = 0
        return first + self.port.read(4096)

    def close(self) -> None:
        self.port.close()


class LinkTransport:
    """A server-side link object (``receive(data, now)``, ``poll(now)``) in this process: what
    it answers is read back at once; time is the monotonic clock unless ``clock`` is given."""

    def __init__(self, link, clock=time.monotonic):
        self.link, self.clock = link, clock
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        self._pending += self.link.receive(data, self.clock())

    def read(self, timeout: float) -> bytes:
        if not self._pending:  # nothing answered: let the link's time-outs run, without spinning
            time.sleep(min(timeout, 0.005))
            self._pending += self.link.poll(self.clock())
        out, self._pending = bytes(self._pending), bytearray()
        return out

    def close(self) -> None:
        """Nothing to release."""


def open_transport(url: str, timeout: float = 5.0):
    """``tcp://HOST:PORT`` or ``socket://HOST:PORT`` (as termineter writes it), else a device
    path. ValueError for anything else."""
    for scheme in ("tcp://", "socket://"):
        if url.startswith(scheme):
            host, _, port = url[len(scheme):].rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{url!r}: expected {scheme}HOST:PORT")
            return SocketTransport(host.strip("[]"), int(port), timeout)
    if url.startswith("/"):
        return SerialTransport(url)
    raise ValueError(f"{url!r}: use tcp://HOST:PORT, socket://HOST:PORT or a device path")


# ---- the client ---------------------------------------------------------------------------


class OpticalClient:
    """Blocking C12.18 client on one transport. ``response_timeout``: how long to wait for the
    meter's ACK and for each response packet (C12.18: 2 s per try, 3 tries)."""

    def __init__(self, transport, *, response_timeout: float = 2.0, retries: int = 3):
        self.transport = transport
        self.response_timeout = response_timeout
        self.retries = retries
        self.packet_size = DEFAULT_PACKET_SIZE
        self.max_packets = 1
        self._parser = PacketParser()
        self._events: list = []
        self._toggle = 0
        self._last_in: bytes | None = None  # the last response packet accepted
        self.psn = 0

    # ---- link ---------------------------------------------------------------------------
    def request(self, apdu: bytes) -> bytes:
        """Send one request APDU, return the response APDU (response code first)."""
        log.debug("-> %s", describe(apdu))
        packets, self._toggle = packetize(apdu, self.packet_size - OVERHEAD, self._toggle)
        for packet in packets:
            self._send_packet(packet)
        response = self._receive_response()
        log.debug("<- %s", response.hex(" "))
        return response

    def _next_event(self, timeout: float):
        deadline = time.monotonic() + timeout
        while not self._events:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._events += self._parser.feed(self.transport.read(left))
        return self._events.pop(0)

    def _send_packet(self, packet: bytes) -> None:
        for _ in range(self.retries):
            self.transport.write(packet)
            while True:
                event = self._next_event(self.response_timeout)
                if event is None or event == NAK:
                    break  # send again
                if event == ACK:
                    return
                if isinstance(event, Packet) and event.raw == self._last_in:
                    self.transport.write(bytes([ACK]))  # a late repeat of the last response
                    continue
                log.debug("unexpected %r while waiting for an ACK; dropped", event)
        raise LinkError(f"no ACK from the meter after {self.retries} tries")

    def _receive_response(self) -> bytes:
        apdu = bytearray()
        misses = 0
        while True:
            event = self._next_event(self.response_timeout)
            if event is None:
                misses += 1
                if misses >= self.retries:
                    raise LinkError(f"no response from the meter within "
                                    f"{self.retries * self.response_timeout:g} s")
                continue
            if not isinstance(event, Packet):
                continue  # a stray ACK/NAK
            if not event.crc_ok:
                self.transport.write(bytes([NAK]))
                continue
            self.transport.write(bytes([ACK]))
            if event.raw == self._last_in:
                continue  # our ACK was lost; the meter sent it again
            self._last_in = event.raw
            if event.ctrl & CTRL_MULTI and event.ctrl & CTRL_FIRST:
                apdu.clear()
            apdu += event.data
            if event.seq == 0:
                return bytes(apdu)

    def _service(self, name: str, apdu: bytes) -> bytes:
        response = self.request(apdu)
        if not response:
            raise LinkError(f"{name}: empty response")
        if response[0] != ResponseCode.OK:
            raise PsemError(name, response[0])
        return response

    # ---- session services -----------------------------------------------------------------
    def ident(self) -> bytes:
        """Ident; returns the meter's answer after the OK byte (standard, version, revision,
        features)."""
        self._last_in = None
        return self._service("ident", b"\x20")[1:]

    def negotiate(self, packet_size: int = 1024, packets: int = 8, baud_code: int = 6
                  ) -> tuple[int, int]:
        """Ask for a packet size and count; the client uses what the meter grants."""
        response = self._service("negotiate", b"\x61" + packet_size.to_bytes(2, "big")
                                 + bytes([packets, baud_code]))
        if len(response) < 4:
            raise LinkError(f"negotiate: short answer {response.hex()}")
        self.packet_size = int.from_bytes(response[1:3], "big")
        self.max_packets = response[3]
        return self.packet_size, self.max_packets

    def logon(self, user_id: int = 0, user: str = "meter-emu") -> None:
        name = user.encode("ascii", "replace")[:USER_NAME_SIZE].ljust(USER_NAME_SIZE)
        self._service("logon", b"\x50" + user_id.to_bytes(2, "big") + name)
        self.psn = 0  # the meter forgets the last PSN at logon

    def security(self, password: bytes) -> None:
        if len(password) != PASSWORD_SIZE:
            raise ValueError(f"the password has {PASSWORD_SIZE} bytes, not {len(password)}")
        self._service("security", b"\x51" + password)

    def logoff(self) -> None:
        self._service("logoff", b"\x52")

    def terminate(self) -> None:
        self._service("terminate", b"\x21")

    def close(self) -> None:
        self.transport.close()

    @contextmanager
    def session(self, password: bytes | None, user_id: int = 0, user: str = "meter-emu",
                packet_size: int = 1024, packets: int = 8):
        """Ident, negotiate, logon and (with a password) security; logoff and terminate at
        the end, also after an error (but not after a link failure: nobody would answer)."""
        self.ident()
        self.negotiate(packet_size, packets)
        self.logon(user_id, user)
        healthy = True
        try:
            if password is not None:
                self.security(password)
            yield self
        except LinkError:
            healthy = False
            raise
        finally:
            if healthy:
                try:
                    self.logoff()
                    self.terminate()
                except ClientError as exc:
                    log.debug("ending the session: %s", exc)

    # ---- table services -------------------------------------------------------------------
    @property
    def max_data(self) -> int:
        """The most table bytes one read can return (response code, count and checksum
        around them in the negotiated packets)."""
        return self.max_packets * (self.packet_size - OVERHEAD) - 4

    def read(self, table: int, offset: int | None = None, count: int | None = None) -> bytes:
        """Full read, or partial read of ``count`` bytes at ``offset``."""
        if offset is None:
            apdu = b"\x30" + table.to_bytes(2, "big")
        else:
            apdu = (b"\x3F" + table.to_bytes(2, "big") + offset.to_bytes(3, "big")
                    + count.to_bytes(2, "big"))
        response = self._service(f"read table {table}", apdu)
        length = int.from_bytes(response[1:3], "big")
        data = response[3:3 + length]
        if len(response) != 4 + length or response[-1] != (-sum(data)) & 0xFF:
            raise LinkError(f"read table {table}: bad length or data checksum in the answer")
        return data

    def read_range(self, table: int, offset: int, count: int) -> bytes:
        """A partial read of any size, in reads the negotiated packets can carry."""
        out = bytearray()
        while len(out) < count:
            step = min(self.max_data, count - len(out))
            out += self.read(table, offset + len(out), step)
        return bytes(out)

    def write(self, table: int, data: bytes, offset: int | None = None) -> None:
        """Full write, or partial write at ``offset``."""
        if offset is None:
            head = b"\x40" + table.to_bytes(2, "big")
        else:
            head = b"\x4F" + table.to_bytes(2, "big") + offset.to_bytes(3, "big")
        self._service(f"write table {table}",
                      head + len(data).to_bytes(2, "big") + data + bytes([(-sum(data)) & 0xFF]))

    def procedure(self, number: int, params: bytes = b"", selector: int = 0
                  ) -> tuple[int, bytes]:
        """Run a procedure: BT07 write (number with the selector in bits 12..15, a new PSN,
        the parameters), then BT08 read. Returns (result code, response data)."""
        self.psn = self.psn % 255 + 1  # never 255 first: the meter holds 255 after logon
        word = (number | selector << 12).to_bytes(2, "little")
        self.write(BT07, word + bytes([self.psn]) + params)
        answer = self.read(BT08)
        if answer[:3] != number.to_bytes(2, "little") + bytes([self.psn]):
            raise ClientError(f"BT08 answers procedure {int.from_bytes(answer[:2], 'little')} "
                              f"PSN {answer[2]}, not procedure {number} PSN {self.psn}")
        return answer[3], answer[4:]


def connect(url: str, *, timeout: float = 5.0, response_timeout: float = 2.0) -> OpticalClient:
    """An OpticalClient on ``open_transport(url)``."""
    return OpticalClient(open_transport(url, timeout), response_timeout=response_timeout)
