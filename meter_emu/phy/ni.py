"""The NI role: a PLC network interface (a U60/U70-like MIP) in front of the fleet's line,
spoken to over the U50 link (phy/u50.py). Sans-I/O: ``feed(data, now)`` / ``deliver(raw,
now, info)`` / ``poll(now)``, then ``take_output()`` for the serial port; frames for the line
come out through ``inject(raw_with_crc)`` (serial_plc.py wires it to ``line.inject``).

NI commands (lower-layers.md §10.4): CpNiResync and 50 (reset) announce a reset ``50 [layer
mode][transceiver ID]``; D0/D1 (and E5 [0|1]) set layer 5 / layer 2, echo the command and
reset; E0 answers ``E0 [model][firmware][mode][0 = ready]``; 22 carries local network
management (SICB, §6), answered by 16; 40/41/42 select how frames come up (1A; 1B with the
phase; 1C with phase and SSI) and are answered by 40 [mains Hz]; C1 from the host holds the
uplink, C0 releases it; 12/13 (with the PL flags 04/08 ORed in) carry an LPDU without CRC to
the line, the NI adds the CRC; every frame on the line goes up as 1A/1B/1C with its CRC;
frames that arrive broken go up as receive errors 31 (CRC), 32 (too long), 35 (too short).

designed:
* the NI's own Neuron ID ``FE 00 00 00 55 50`` (``neuron_id=``), model 1E and firmware A0
  (the U60 status of the §11.3 capture), transceiver ID 15 (PL-20A, A-band);
* its read-only memory (NM read memory, mode 1) is the Neuron ID, 7 zero bytes and the program
  ID ``MTREMUNI``; ND query status answers 15 bytes: 5 zero counters, reset cause 01
  (power-up), state 04 (configured), version A0, error log 0, model 1E. Other local NM
  commands get the NM failure code;
* layer 5 (the mode after power-up, as in §11.3): this NI runs no 14908.1 stack for its host,
  so nothing from the line goes up and 12/13 are dropped with a log line; local NM (22), status
  and the mode switch work. A host that wants the line switches to layer 2 (D1);
* phase byte: the ideal line has no mains, so the phase is 0 (byte ``phase + 1`` = 01);
* SSI bytes (1C): register 1 = signal strength in whole dB (the BPSK line's dBuV), register
  2 = margin in whole dB, each clamped to 0..254, FF when the line did not measure it (the
  same scale as the transceiver registers of lon/netmgmt.py);
* the mains frequency reported by 40 is 50 (Hz, one byte);
* while the host holds the uplink (C1) up to ``HOLD_LIMIT`` frames wait; older ones are
  dropped with a log line.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from ..lon.frame import crc16_lon
from ..lon.node import NO_LINK_INFO, LinkInfo
from .u50 import U50Link

log = logging.getLogger(__name__)

NI_NEURON_ID = bytes.fromhex("FE0000005550")
PROGRAM_ID = b"MTREMUNI"
MODEL, FIRMWARE = 0x1E, 0xA0
XCVR_PL20A = 15
LAYER5, LAYER2 = 0, 1
MAINS_HZ = 50
HOLD_LIMIT = 64
MIN_LPDU, MAX_LPDU = 8, 258   # with CRC: lon-stack-dx drops PL frames under 8 bytes; 256 + CRC

NI_RESET, NI_STATUS, NI_L5, NI_L2, NI_SET_MODE = 0x50, 0xE0, 0xD0, 0xD1, 0xE5
NI_LOCAL_NM, NI_LOCAL_NM_RESPONSE = 0x22, 0x16
NI_ACK, NI_NACK = 0xC0, 0xC1
RX_L2, RX_L2_PHASE, RX_L2_SSI = 0x1A, 0x1B, 0x1C
ERR_CRC, ERR_TOO_LONG, ERR_TOO_SHORT = 0x31, 0x32, 0x35
TRANSMITS = frozenset(base | flags for base in (0x12, 0x13) for flags in (0, 4, 8, 12))

READ_MEMORY, QUERY_STATUS = 0x6D, 0x51


def ssi_byte(value_db: float | None) -> int:
    return 0xFF if value_db is None else max(0, min(254, round(value_db)))


def nm_success(code: int) -> int:
    return 0x30 | code & 0x0F if code < 0x60 else 0x20 | code & 0x1F


def nm_failure(code: int) -> int:
    return 0x10 | code & 0x0F if code < 0x60 else code & 0x1F


class NetworkInterface:
    """The NI end of the serial link. ``inject(raw)``: put an LPDU (with CRC) on the line."""

    def __init__(self, inject: Callable[[bytes], object], *, neuron_id: bytes = NI_NEURON_ID,
                 xcvr_id: int = XCVR_PL20A, model: int = MODEL, firmware: int = FIRMWARE,
                 name: str = "serial NI", **link_options):
        self.inject = inject
        self.neuron_id = bytes(neuron_id)
        self.xcvr_id, self.model, self.firmware = xcvr_id, model, firmware
        self.name = name
        self.link = U50Link("ni", name=name, **link_options)
        self.layer = LAYER5
        self.phase_mode = 0
        self.held = False
        self._hold: deque[tuple[int, bytes]] = deque()
        self.stats = {"to_line": 0, "from_line": 0, "dropped": 0, "errors_sent": 0}

    # ---- serial side --------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> None:
        self.link.feed(data, now)
        for message in self.link.take_messages():
            try:
                self._command(message, now)
            except Exception:  # noqa: BLE001 - one command's bug must not stop the NI
                log.exception("%s: internal error on NI command %s; dropped", self.name,
                              message.cmd)

    def poll(self, now: float) -> None:
        self.link.poll(now)

    def next_deadline(self) -> float | None:
        return self.link.next_deadline()

    def take_output(self) -> bytes:
        return self.link.take_output()

    def _command(self, message, now: float) -> None:
        cmd = message.cmd
        if cmd is None or cmd == NI_RESET:  # resync, or the host resets us
            self._reset(now)
        elif cmd in (NI_L5, NI_L2) or cmd == NI_SET_MODE and message.payload[:1] in (b"\0",
                                                                                    b"\1"):
            layer = (cmd == NI_L2) if cmd != NI_SET_MODE else message.payload[0]
            self.layer = LAYER2 if layer else LAYER5
            log.info("%s: layer %d", self.name, 2 if self.layer == LAYER2 else 5)
            self.link.clear("layer mode change")
            self.link.send(NI_L2 if self.layer == LAYER2 else NI_L5, short=True,
                           reliable=False, now=now)
            self.link.announce(NI_RESET, bytes([self.layer, self.xcvr_id]), now=now)
        elif cmd == NI_STATUS:
            self.link.send(NI_STATUS, bytes([self.model, self.firmware, self.layer, 0]), now=now)
        elif cmd in TRANSMITS:
            self._transmit(message.payload)
        elif cmd == NI_LOCAL_NM:
            self._local_nm(message.payload, now)
        elif cmd & 0xF0 == 0x40 and cmd <= 0x42:
            self.phase_mode = cmd & 0x0F
            self.link.send(0x40, bytes([MAINS_HZ]), now=now)
        elif cmd in (NI_ACK, NI_NACK):
            self.held = cmd == NI_NACK
            if not self.held:
                while self._hold:
                    self.link.send(*self._hold.popleft(), now=now)
        else:
            log.info("%s: NI command %02X not offered; ignored", self.name, cmd)

    def _reset(self, now: float) -> None:
        self.link.clear("NI reset")
        self._hold.clear()
        self.held = False
        self.link.send(NI_RESET, bytes([self.layer, self.xcvr_id]), reliable=False, now=now)

    def _transmit(self, lpdu: bytes) -> None:
        if self.layer != LAYER2:
            self.stats["dropped"] += 1
            log.info("%s: layer-2 transmit while in layer 5 dropped (send D1 first)", self.name)
            return
        if len(lpdu) < MIN_LPDU - 2:
            self.stats["dropped"] += 1
            log.info("%s: layer-2 transmit of %d bytes is too short for an LPDU; dropped",
                     self.name, len(lpdu))
            return
        crc = crc16_lon(lpdu)
        self.stats["to_line"] += 1
        if self.inject(lpdu + bytes([crc >> 8, crc & 0xFF])) is False:
            self.stats["dropped"] += 1
            log.info("%s: the line refused the frame %s", self.name, lpdu.hex())

    # ---- local network management (SICB, §6) ------------------------------------------------

    def _local_nm(self, sicb: bytes, now: float) -> None:
        if len(sicb) < 15 or len(sicb) < 14 + sicb[2] or sicb[2] < 1:
            log.info("%s: local NM message of %d bytes is malformed; dropped", self.name,
                     len(sicb))
            return
        apdu = sicb[14:14 + sicb[2]]
        answer = self._nm_answer(apdu)
        self.link.send(NI_LOCAL_NM_RESPONSE,
                       bytes([sicb[0], 0x01, len(answer)]) + bytes(11) + answer, now=now)

    def _nm_answer(self, apdu: bytes) -> bytes:
        code, data = apdu[0], apdu[1:]
        if code == READ_MEMORY and len(data) == 4 and data[0] == 1:
            offset, count = data[1] << 8 | data[2], data[3]
            memory = self.neuron_id + bytes(7) + PROGRAM_ID
            if offset + count <= len(memory):
                return bytes([nm_success(code)]) + memory[offset:offset + count]
        elif code == QUERY_STATUS and not data:
            return bytes([nm_success(code)]) + bytes(10) + bytes(
                [0x01, 0x04, self.firmware, 0, self.model])
        log.info("%s: local NM %s not offered; failure answered", self.name, apdu.hex())
        return bytes([nm_failure(code)])

    # ---- line side ----------------------------------------------------------------------------

    def deliver(self, raw: bytes, now: float, info: LinkInfo = NO_LINK_INFO) -> None:
        """A frame on the line (LPDU with CRC): up to the host, in layer 2."""
        if self.layer != LAYER2:
            return
        raw = bytes(raw)
        error = (ERR_TOO_SHORT if len(raw) < MIN_LPDU else ERR_TOO_LONG if len(raw) > MAX_LPDU
                 else ERR_CRC if crc16_lon(raw[:-2]) != int.from_bytes(raw[-2:], "big")
                 else None)
        if error is not None:
            self.stats["errors_sent"] += 1
            self._up(error, b"", now, short=True)
            return
        info = info or NO_LINK_INFO
        if self.phase_mode == 0:
            self._up(RX_L2, raw, now)
        elif self.phase_mode == 1:
            self._up(RX_L2_PHASE, b"\x01" + raw, now)
        else:
            self._up(RX_L2_SSI, b"\x01" + raw + bytes([ssi_byte(info.strength_db),
                                                       ssi_byte(info.margin_db)]), now)

    def _up(self, cmd: int, payload: bytes, now: float, short: bool = False) -> None:
        self.stats["from_line"] += 1
        if self.held and not short:
            if len(self._hold) >= HOLD_LIMIT:
                self._hold.popleft()
                self.stats["dropped"] += 1
                log.warning("%s: host holds the uplink; oldest waiting frame dropped", self.name)
            self._hold.append((cmd, payload))
            return
        if short:
            self.link.send(cmd, short=True, reliable=False, now=now)
        else:
            self.link.send(cmd, payload, now=now)
