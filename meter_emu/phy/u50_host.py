"""The host role of the U50 link (phy/u50.py): drives a PLC network interface, ours (phy/ni.py
behind ``meter-emu run --serial-plc pty``) or a real one on a serial port. Sans-I/O, like the
link: ``start(now)``, ``feed(data, now)``, ``poll(now)`` at ``next_deadline()``,
``take_output()`` for the port, ``transmit(raw)`` for a frame to send, ``take_frames()`` for
the frames the NI received, each with its LinkInfo.

Start-up (lower-layers.md §10.4): CpNiResync; wait for the NI's reset message; read the NI's
Neuron ID with local NM read memory (mode 1, offset 0, 6 bytes); D1 (layer 2), which the NI
echoes before it resets; E0 status, which must say layer 2; ``42 00`` (PL mode 2: phase and
SSI bytes on every frame, answered by 40; an NI without it just does not answer); a CpNull.
Each step waits a bounded time (the lon-stack-dx waits: reset 800 ms, status and UID 350 ms;
longer here for a loaded machine) and moves on without what it did not get, so an NI that
skips an announcement still comes up; only a status that never says layer 2 fails the start-up.

Frames sent before the start-up ends wait (up to ``QUEUE_LIMIT``). A frame goes down as NI
command 12 (13 when its L2 priority bit is set) without its CRC; 1A/1B/1C come up with it
(1B/1C: a phase byte first; 1C: the SSI bytes last, read back with the scale of phy/ni.py).
An NI that resets itself later (an uplink 50 in layer 5) is switched back to layer 2.
"""

from __future__ import annotations

import logging
from collections import deque

from ..lon.node import NO_LINK_INFO, LinkInfo
from .ni import (LAYER2, NI_L2, NI_LOCAL_NM, NI_LOCAL_NM_RESPONSE, NI_RESET, NI_STATUS,
                 READ_MEMORY, RX_L2, RX_L2_PHASE, RX_L2_SSI, nm_success)
from .u50 import U50Link

log = logging.getLogger(__name__)

QUEUE_LIMIT = 64
WAITS = {"reset": 0.8, "nid": 1.0, "mode": 1.5, "status": 1.0, "ssi": 1.0}
MODE_SSI = 0x42
READ_NID = bytes([0x70, 0x00, 0x05]) + bytes(11) + bytes([READ_MEMORY, 0x01, 0x00, 0x00, 0x06])
MODE_TRIES = 3


def _db(byte: int) -> float | None:
    return None if byte == 0xFF else float(byte)


class HostSession:
    def __init__(self, *, name: str = "U50 host", **link_options):
        self.name = name
        self.link = U50Link("host", name=name, **link_options)
        self.state = "idle"        # reset, nid, mode, status, ssi, ready, failed
        self.neuron_id: bytes | None = None
        self.status: tuple[int, int, int, int] | None = None  # model, firmware, mode, state
        self._deadline: float | None = None
        self._tries = 0
        self._waiting: deque[bytes] = deque()
        self._frames: list[tuple[bytes, LinkInfo]] = []
        self.stats = {"sent": 0, "received": 0, "receive_errors": 0, "dropped": 0}

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def start(self, now: float) -> None:
        self.link.resync(now)
        self._enter("reset", now)

    def _enter(self, state: str, now: float) -> None:
        self.state = state
        self._deadline = now + WAITS[state] if state in WAITS else None
        if state == "nid":
            self.link.send(NI_LOCAL_NM, READ_NID, now=now)
        elif state == "mode":
            self._tries += 1
            self.link.send(NI_L2, now=now)
        elif state == "status":
            self.link.send(NI_STATUS, short=True, now=now)
        elif state == "ssi":
            self.link.send(MODE_SSI, b"\x00", now=now)
        elif state == "ready":
            self.link.null(now)
            log.info("%s: NI %s ready (model %02X, firmware %02X)", self.name,
                     self.neuron_id.hex().upper() if self.neuron_id else "?",
                     *(self.status or (0, 0))[:2])
            while self._waiting:
                self._send(self._waiting.popleft(), now)

    # ---- I/O ----------------------------------------------------------------------------------

    def feed(self, data: bytes, now: float) -> None:
        self.link.feed(data, now)
        for message in self.link.take_messages():
            try:
                self._message(message.cmd, message.payload, now)
            except Exception:  # noqa: BLE001 - a bug on one message must not stop the host
                log.exception("%s: internal error on NI command %s; dropped", self.name,
                              message.cmd)

    def poll(self, now: float) -> None:
        self.link.poll(now)
        if self._deadline is not None and now >= self._deadline:
            self._timeout(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.link.next_deadline(), self._deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def take_output(self) -> bytes:
        return self.link.take_output()

    def take_frames(self) -> list[tuple[bytes, LinkInfo]]:
        out, self._frames = self._frames, []
        return out

    def transmit(self, raw: bytes, now: float) -> bool:
        """A frame (LPDU with CRC) for the NI to send on its line; it waits for the start-up."""
        if len(raw) < 3:
            log.info("%s: frame of %d bytes is no LPDU; dropped", self.name, len(raw))
            return False
        if self.ready:
            return self._send(raw, now)
        if len(self._waiting) >= QUEUE_LIMIT:
            self.stats["dropped"] += 1
            log.warning("%s: NI not ready; frame dropped", self.name)
            return False
        self._waiting.append(bytes(raw))
        return True

    def _send(self, raw: bytes, now: float) -> bool:
        self.stats["sent"] += 1
        return self.link.send(0x13 if raw[0] & 0x80 else 0x12, bytes(raw[:-2]), now=now)

    # ---- what the NI says ---------------------------------------------------------------------

    def _message(self, cmd: int | None, payload: bytes, now: float) -> None:
        if cmd in (RX_L2, RX_L2_PHASE, RX_L2_SSI):
            self._frame(cmd, payload)
        elif cmd is not None and cmd & 0xF0 == 0x30:
            self.stats["receive_errors"] += 1
            log.info("%s: the NI reports receive error %02X", self.name, cmd)
        elif cmd == NI_RESET:
            layer = payload[0] if payload else None
            if self.state == "reset":
                self._enter("nid", now)
            elif self.state == "mode" and layer == LAYER2:
                self._enter("status", now)
            elif self.state == "ready" and layer != LAYER2:
                log.warning("%s: the NI reset itself to layer 5; switching it back", self.name)
                self._tries = 0
                self._enter("mode", now)
        elif cmd == NI_LOCAL_NM_RESPONSE and self.state == "nid":
            if len(payload) >= 21 and payload[14] == nm_success(READ_MEMORY):
                self.neuron_id = bytes(payload[15:21])
            self._enter("mode", now)
        elif cmd == 0x40 and self.state == "ssi":
            self._enter("ready", now)
        elif cmd == NI_STATUS and len(payload) >= 4:
            self.status = tuple(payload[:4])
            if self.state == "status":
                if payload[2] == LAYER2:
                    self._enter("ssi", now)
                else:
                    self._retry_mode(now, f"status says layer {payload[2]}")

    def _frame(self, cmd: int, payload: bytes) -> None:
        info = NO_LINK_INFO
        if cmd == RX_L2_PHASE:
            payload = payload[1:]
        elif cmd == RX_L2_SSI:
            if len(payload) >= 3:
                info = LinkInfo(_db(payload[-2]), _db(payload[-1]))
            payload = payload[1:-2]
        if len(payload) < 3:
            log.info("%s: NI frame of %d bytes is no LPDU; dropped", self.name, len(payload))
            return
        self.stats["received"] += 1
        self._frames.append((bytes(payload), info))

    def _timeout(self, now: float) -> None:
        state = self.state
        self._deadline = None
        if state == "reset":
            log.info("%s: no reset announcement from the NI; reading its Neuron ID", self.name)
            self._enter("nid", now)
        elif state == "nid":
            log.info("%s: the NI did not give its Neuron ID; going on", self.name)
            self._enter("mode", now)
        elif state == "mode":
            self._enter("status", now)
        elif state == "status":
            self._retry_mode(now, "no status")
        elif state == "ssi":
            log.info("%s: the NI has no SSI mode; frames come up without signal strength",
                     self.name)
            self._enter("ready", now)

    def _retry_mode(self, now: float, why: str) -> None:
        if self._tries >= MODE_TRIES:
            self.state, self._deadline = "failed", None
            log.error("%s: the NI does not come up in layer 2 (%s)", self.name, why)
            return
        log.info("%s: %s; layer 2 asked again", self.name, why)
        self._enter("mode", now)
