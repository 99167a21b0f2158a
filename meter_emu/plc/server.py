"""The meter's OSGP server on the power line: secured table services for one meter, unicast and
secure broadcast (DESIGN.md D1-D3; the APDU and its security: plc/secure.py). Sans-I/O: the
station hands it each Indication the node delivers; it returns the response APDU or None.

**Unicast** (addressed by subnet/node or Neuron ID). The unicast OMA key (device/keys.py
``oma_key(meter, 0)``, of the length ET04.127's mode needs; None: nothing authenticates) is
tried on every message and each try counts (``count_use``). A message it does not
authenticate answers ``0B`` alone. The sequence number must lie within 8 ahead of the one the
meter expects (D3); otherwise ``0C ‖ expected (4, MSB)``, signed, and the number does not move.
An accepted request moves it to its number + 1, whatever the table service answers next: every
sealed response uses up its number (an AES nonce is never sealed twice). The number lives in
the meter's subsystem ``plc`` and is mirrored into ET04.0 (UINT32, LSB first) by patching the
stored image's first 4 bytes (ET04 is stored once, on the first accepted request).

Designed:

* **0x1F Interface Change.** The first request after ET04.116 IDT Version changed (EP06, EP10,
  EP11, EP32, EP33, EP37) answers ``1F ‖ expected`` instead of being served, with the expected
  number moved on by 25 (D3 keeps MEP's +25 rule): the head-end takes the number, re-reads the
  dimension tables and goes on. 0x0C stays for a plain loss of step.
* **PLC dialect.** A full read is ``30 TT TT`` (slides: "Command code (0x30), Table ID"; no
  length, unlike MEP); no checksums. Services run as ``Key.PLC``, user ID USER_PLC, port "plc".
* **0x1E Incompatible** answers a request the PLC medium cannot carry (slides' limits): a
  partial read of more than 84 bytes, a partial write of more than 75, any request APDU above
  95 bytes (a full write of more than 78), and a full read whose response would exceed 95 bytes
  (more than 84 data bytes: read it in parts). The slides name 0x1E and these limits; MEP's
  ONP (0x04) says "not possible" where PLC says "not on this medium".
* **0x06 Device Busy** within ET04.122 Power Up Wait Time (seconds, 0 = none) after the
  meter's last power-up: a power restoration or the restart of an EP10 code-bank switch, both
  logged as event 2 in BT74 (MEP p.65: "the delay between power up and the start of external
  communications"). The request's number is used up as for any answer.

**Secure broadcast** (addressed by broadcast or 14908.1 group; the APDU: plc/secure.py) under
the broadcast key (slot 1), each try counted with ``count_use(broadcast=True)``. Accepted when
the OSGP group ID matches one of the meter's EP27 groups (``group_matches``: exact, 0xYYFF
every sub-group of YY, 0xFFYY and 0xFFFF everyone, 0 nobody), the sequence lies in ET04's
window ``base < seq <= base + delta`` (ET04.82 UINT32, ET04.86 UINT16; reference
osgp-app-layer.md section 12) and is above the last accepted one; a replay or anything else is
ignored with a log line. The last accepted number restarts from the base when the head-end
moves the base. Acceptance records ET04.76 Broadcast Receipt (the meter's local time) and runs
the APDU, which must be a write (a read has nobody to answer to). No response is ever sent.

**Counting.** Every unicast REQUEST answered counts in the fleet's statistics (fleet/stats.py,
port "plc") with its response code, taken before sealing (an encrypted answer hides it), and
its service time; broadcasts are not requests.
"""

from __future__ import annotations

import logging
import time

from ..device import keys
from ..device.access import Key
from ..device.errors import ResponseCode, ServiceError
from ..events import POWER_UP, USER_PLC
from ..fleet import stats
from ..lon.frame import Broadcast, Group
from ..lon.node import Service
from ..ports.table_services import Dialect, handle_table_service
from ..tables.catalog import et
from . import FULL_READ, FULL_WRITE, MAX_APDU, MAX_READ, MAX_WRITE, OSGP_COMMANDS
from . import PARTIAL_READ, PARTIAL_WRITE
from .secure import DIGEST, INTERFACE_CHANGE, INVALID_SEQUENCE, MODE_NAMES, suite

log = logging.getLogger(__name__)

#: OSGP over PLC: full read without a length, no checksums (designed, see above)
PLC = Dialect(checksum=False, full_read_length=False)
SEQUENCE_WINDOW = 8
IDT_STEP = 25
SUBSYSTEM = "plc"
_WRAP = 0xFFFFFFFF
_ET04 = et(4)
# ET04 offsets (MEP p.54-66)
_RECEIPT, _BASE, _DELTA, _IDT, _WAIT = 76, 82, 86, 116, 122


def group_matches(group: int, mine: list[int]) -> bool:
    """Whether an OSGP broadcast to ``group`` is for a meter of the groups ``mine`` (EP27):
    0xFFFF and 0xFFYY everyone, 0xYYFF every sub-group of YY, 0 nobody (MEP p.131)."""
    if group == 0:
        return False
    if group >> 8 == 0xFF:
        return True
    if group & 0xFF == 0xFF:
        return any(own >> 8 == group >> 8 for own in mine)
    return group in mine


class PlcServer:
    """The OSGP application of one meter on the power line."""

    def __init__(self, meter, clock, *, port: str = "plc"):
        self.meter = meter
        self.clock = clock
        self.port = port
        self.code = ResponseCode.OK  # the response code of the last unicast answer

    # -- entry ---------------------------------------------------------------------------

    def handle(self, ind, now: float) -> bytes | None:
        """The response APDU to a unicast REQUEST, else None. Never raises."""
        started = time.perf_counter()
        try:
            if isinstance(ind.dst, (Broadcast, Group)):
                self._broadcast(bytes(ind.apdu))
                return None
            self.code = ResponseCode.ERR
            response = self._unicast(bytes(ind.apdu))
        except Exception:  # noqa: BLE001 - a bug costs one answer, never the meter
            log.exception("%s: internal error on a PLC message", self.meter.id)
            self.code, response = ResponseCode.ERR, bytes([ResponseCode.ERR])
        if ind.service != Service.REQUEST:
            return None
        stats.STATS.request("plc", self.meter.id, self.code, time.perf_counter() - started)
        return response

    # -- state ---------------------------------------------------------------------------

    def _suite(self, slot: int):
        key = keys.oma_key(self.meter, slot)
        if key is None:
            return None
        return suite(key, MODE_NAMES[keys.security_mode(self.meter)], slot == keys.BROADCAST)

    def _et04_byte(self, offset: int, default: int = 0) -> int:
        raw = self.meter.state.tables.get(_ET04)
        return default if raw is None else raw[offset]

    def _state(self) -> dict:
        own = self.meter.state.subsystems.get(SUBSYSTEM)
        if own is None or "sequence" not in own:
            raw = self.meter.state.tables.get(_ET04)
            start = (self.meter.profile.plc.sequence_number if raw is None
                     else int.from_bytes(raw[:4], "little"))
            own = self.meter.subsystem(SUBSYSTEM, sequence=start,
                                       idt=self._et04_byte(_IDT))
        return own

    def _set_sequence(self, state: dict, value: int) -> None:
        """The expected number, in the subsystem and ET04.0 (a 4-byte patch: no build)."""
        state["sequence"] = value
        meter = self.meter
        raw = meter.state.tables.get(_ET04)
        if raw is None:  # the first time: ET04 as the meter renders it (one build, no parse)
            raw = meter.table_bytes(_ET04, 0.0)
        meter.state.tables[_ET04] = value.to_bytes(4, "little") + raw[4:]
        meter.dirty = True

    # -- unicast -------------------------------------------------------------------------

    def _unicast(self, message: bytes) -> bytes:
        return self.secured(message, lambda apdu, encrypted, at:
                            self._execute(apdu, len(message), at))

    def secured(self, message: bytes, execute) -> bytes:
        """Open a unicast secured request (unicast key, key use counted, sequence window,
        0x1F), and answer ``execute(apdu, encrypted, at) -> code ‖ data`` sealed; 0x0B, 0x0C
        and 0x1F as for the table services. ``encrypted``: the request came encrypted (always
        in AES mode), so a service carrying keys (FCM) can refuse a plaintext one. ``code``
        keeps the plaintext response code of the answer."""
        meter, at = self.meter, self.clock.now()
        secured = self._suite(keys.UNICAST)
        opened = None
        if secured is not None:
            keys.count_use(meter, at)
            opened = secured.open_request(message)
        if opened is None:
            log.info("%s: answering 0x0B: no key authenticates the %d-byte PLC message%s",
                     meter.id, len(message), "" if secured else " (no key for the mode)")
            self.code = ResponseCode.SME
            return bytes([ResponseCode.SME])
        apdu, sequence, exchange = opened
        state = self._state()
        expected = state["sequence"]
        idt = self._et04_byte(_IDT)
        if idt != state["idt"]:
            expected = (expected + IDT_STEP) & _WRAP
            state["idt"] = idt
            self._set_sequence(state, expected)
            log.info("%s: answering 0x1F: IDT version now %d; expecting %08x", meter.id, idt,
                     expected)
            self.code = INTERFACE_CHANGE
            return exchange.refuse(INTERFACE_CHANGE, expected)
        if (sequence - expected) & _WRAP > SEQUENCE_WINDOW:
            log.info("%s: answering 0x0C: sequence %08x, expected %08x", meter.id, sequence,
                     expected)
            self.code = INVALID_SEQUENCE
            return exchange.refuse(INVALID_SEQUENCE, expected)
        self._set_sequence(state, (sequence + 1) & _WRAP)
        encrypted = secured.mode == "aes" or getattr(exchange, "stream", None) is not None
        response = execute(apdu, encrypted, at)
        self.code = response[0] if response else ResponseCode.ERR
        return exchange.seal(response)

    def _execute(self, apdu: bytes, size: int, at: float) -> bytes:
        try:
            if not apdu or apdu[0] not in OSGP_COMMANDS:
                raise ServiceError(ResponseCode.SNS, "not a table service")
            self._check_limits(apdu, size)
            self._check_busy(at)
            response = handle_table_service(PLC, self.meter, apdu, Key.PLC, at,
                                            user_id=USER_PLC, port=self.port)
            if len(response) + DIGEST > MAX_APDU:
                raise ServiceError(ResponseCode.INC, f"a {len(response) - 3}-byte full read "
                                   f"exceeds {MAX_READ} bytes; use partial reads")
            return response
        except ServiceError as error:
            log.debug("%s: answering 0x%02X to %s: %s", self.meter.id, error.code,
                      apdu[:3].hex(), error.reason)
            return bytes([error.code])

    @staticmethod
    def _check_limits(apdu: bytes, size: int) -> None:
        code = apdu[0]
        if code == PARTIAL_READ and len(apdu) >= 8:
            count = int.from_bytes(apdu[6:8], "big")
            if count > MAX_READ:
                raise ServiceError(ResponseCode.INC, f"partial read of {count} > {MAX_READ} bytes")
        elif code == PARTIAL_WRITE and len(apdu) >= 8:
            count = int.from_bytes(apdu[6:8], "big")
            if count > MAX_WRITE:
                raise ServiceError(ResponseCode.INC,
                                   f"partial write of {count} > {MAX_WRITE} bytes")
        if size > MAX_APDU:
            raise ServiceError(ResponseCode.INC, f"a {size}-byte request exceeds {MAX_APDU} bytes")

    def _check_busy(self, at: float) -> None:
        wait = self._et04_byte(_WAIT)
        if not wait:
            return
        meter = self.meter
        for entry in reversed(meter.state.history.entries):
            if entry[3] == POWER_UP.number:
                since = meter.utc_seconds(at) - entry[0]
                if since < wait:
                    raise ServiceError(ResponseCode.BSY, f"{since:.0f} s after power-up, "
                                                         f"within the {wait} s wait time")
                return

    # -- secure broadcast ----------------------------------------------------------------

    def _broadcast(self, message: bytes) -> None:
        meter, at = self.meter, self.clock.now()
        secured = self._suite(keys.BROADCAST)
        if secured is None:
            log.info("%s: broadcast ignored: no broadcast key for the mode", meter.id)
            return
        keys.count_use(meter, at, broadcast=True)
        opened = secured.open_request(message)
        if opened is None or len(opened[0]) < 3:
            log.info("%s: broadcast ignored: it does not authenticate", meter.id)
            return
        inner, sequence, _ = opened
        apdu, group = inner[:-2], int.from_bytes(inner[-2:], "big")
        from ..tables.system import broadcast_groups  # parses ET55: only for broadcasts
        if not group_matches(group, broadcast_groups(meter)):
            log.info("%s: broadcast to group 0x%04X ignored: not a group of this meter",
                     meter.id, group)
            return
        raw = meter.state.tables.get(_ET04)
        base = 0 if raw is None else int.from_bytes(raw[_BASE:_BASE + 4], "little")
        delta = 0 if raw is None else int.from_bytes(raw[_DELTA:_DELTA + 2], "little")
        if not base < sequence <= base + delta:
            log.info("%s: broadcast %d ignored: outside the window (%d, %d]", meter.id,
                     sequence, base, base + delta)
            return
        state = self._state()
        if state.get("broadcast_base") != base:
            state["broadcast_base"] = state["broadcast_last"] = base
        if sequence <= state["broadcast_last"]:
            log.info("%s: broadcast %d ignored: replayed (last accepted %d)", meter.id,
                     sequence, state["broadcast_last"])
            return
        state["broadcast_last"] = sequence
        from ..tables.extended import set_system_fields
        set_system_fields(meter, broadcast_receipt=meter.local(at))
        if not apdu or apdu[0] not in (FULL_WRITE, PARTIAL_WRITE):
            log.info("%s: broadcast %d accepted but not run: 0x%02X is not a write (%s)",
                     meter.id, sequence, apdu[0], "reads" if apdu[0] in (FULL_READ,
                                                            PARTIAL_READ) else "unknown")
            return
        response = self._execute(apdu, len(message) - 2, at)
        log.info("%s: broadcast %d to group 0x%04X ran %s: 0x%02X", meter.id, sequence, group,
                 apdu[:3].hex(), response[0])
