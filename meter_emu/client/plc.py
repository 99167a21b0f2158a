"""The head-end (data concentrator) side of OSGP over the power line: what tests, demos, the
benchmark and ``meter-emu client`` use to talk to meters through the 14908.1 stack.

Two layers:

* ``HeadEnd(node, driver)``: the head-end's own 14908.1 node (lon/node.py) on a medium. The
  driver is the in-memory ``lon/channel.py`` Channel, the CN/IP ``cnip/client.py``
  CnipDriver or the serial NI's ``client/serial_driver.py`` SerialDriver; all give ``now()``
  and ``run_until(done, timeout)``. The head-end is the node's
  Application: it keeps each sent message's Completion by handle and every unsolicited message
  (service pin, late answers) in ``indications``. ``transact`` sends and waits.
* ``PlcClient(head_end, key)``: OSGP on top, one ``plc/secure.py`` ClientSession per meter
  (OMA key, sequence number). A meter that answers 0x0C / 0x1F (sequence number out of window)
  gets the request again once, sealed with the number it asked for. It offers discovery (ADD),
  commissioning (FCM), table reads and writes in 84 / 75-byte parts, procedures (BT07 + BT08),
  the load profile (BT61/BT62/BT63 then BT64 blocks), firmware to a group by secure broadcast
  with unicast fill-in, network management (status, wink) and repeater paths (LTEP).

Meters are named by ``MeterRef`` (``meter_ref`` turns a Neuron ID, ``SUBNET/NODE`` text, a
SubnetNode or a discovered meter into one). A Neuron ID reaches a meter whether or not it is
commissioned: it goes in the head-end's domain, which an uncommissioned meter takes as its flex
domain (the head-end's node cannot send from 0/0 and still take the answer).

Errors are ``ClientError``s naming the meter, the request and the meter's answer:
``PlcError`` (the meter answered a response code), ``NoAnswer`` (no response after the
node's retries), ``SecurityFailure`` (an answer that does not verify under our key).

Designed here: the head-end's default address (subnet 255, node 127: outside the subnets a
fleet is commissioned in) and Neuron ID (``FE 00 00 00 00 01``); a whole-table read takes the
table's size from the catalog's layout for a model meter built from a profile (the default
one unless given): the head-end's knowledge of what it reads, as a real head-end has it.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from ..device.errors import ResponseCode
from ..lon.config import CONFIGURED, Domain, NodeConfig
from ..lon.frame import Address, Broadcast, NeuronId, SubnetNode
from ..lon.node import Completion, Indication, Node, Service
from ..plc import FULL_READ, FULL_WRITE, MAX_READ, MAX_WRITE, PARTIAL_READ, PARTIAL_WRITE
from ..tables.catalog import label
from . import firmware
from .optical import ClientError

log = logging.getLogger(__name__)

HEAD_END_NEURON_ID = bytes.fromhex("FE0000000001")
HEAD_END_SUBNET, HEAD_END_NODE = 255, 127
DEFAULT_TIMEOUT = 30.0  # seconds of driver time one message may take, retries included
BT07, BT08 = 7, 8
BT61, BT62, BT63, BT64 = 61, 62, 63, 64
ET04 = 2048 + 4
ET04_BROADCAST_BASE = 82  # UINT32 base, then UINT16 delta at 86 (plc/server.py, MEP p.54-66)

#: response codes as a head-end operator reads them (MEP p.10-11; slides for 0x06, 0x1E, 0x1F)
CODE_NAMES = {
    0x00: "ok", 0x01: "error", 0x02: "service not supported",
    0x03: "insufficient security clearance", 0x04: "operation not possible",
    0x05: "inappropriate action requested", 0x06: "device busy", 0x07: "data not ready",
    0x08: "data locked", 0x09: "renegotiate", 0x0A: "invalid service sequence state",
    0x0B: "digest error", 0x0C: "invalid sequence number", 0x1E: "incompatible error",
    0x1F: "interface change",
}
RESYNC_CODES = frozenset({ResponseCode.UAT, 0x1F})


def code_text(code: int) -> str:
    return f"0x{code:02X} {CODE_NAMES.get(code, 'unknown response code')}"


# ---- errors --------------------------------------------------------------------------------


class PlcError(ClientError):
    """The meter answered ``code`` to ``request``."""

    def __init__(self, meter: str, code: int, request: str, detail: str = ""):
        super().__init__(f"meter {meter} answered {code_text(code)} to {request}"
                         + (f" ({detail})" if detail else ""))
        self.meter, self.code, self.request = meter, code, request


class NoAnswer(ClientError):
    """No answer came (the node gave up after its retries, or the time ran out)."""

    def __init__(self, meter: str, request: str, reason: str):
        super().__init__(f"meter {meter} did not answer {request}: {reason}")
        self.meter, self.request, self.reason = meter, request, reason


class SecurityFailure(ClientError):
    """An answer that does not verify under the head-end's key (wrong key, or a forgery)."""


# ---- the head-end's node -------------------------------------------------------------------


def head_end_config(domain: bytes = b"", subnet: int = HEAD_END_SUBNET,
                    node: int = HEAD_END_NODE, *, key: bytes = bytes(6),
                    neuron_id: bytes = HEAD_END_NEURON_ID) -> NodeConfig:
    """A configured node in the meters' application domain (``domain``: 0, 1, 3 or 6
    bytes) and, as its second entry, in the global discovery domain (plc/services.py) at
    subnet 255 (head-ends' subnet there) with the same node number."""
    from ..plc.services import headend_domain

    return NodeConfig(neuron_id=neuron_id, domains=[Domain(domain, subnet, node, key),
                                                    headend_domain(node)],
                      state=CONFIGURED,
                      transmit_timer=11)  # 768 ms: a 95-byte answer's airtime + CSMA on PLC


class HeadEnd:
    """The head-end's node on ``driver``; the node's Application. ``node`` may be a Node
    (already attached to the driver) whose application this becomes."""

    def __init__(self, node: Node, driver, *, timeout: float = DEFAULT_TIMEOUT):
        self.node = node
        node.app = self
        self.driver = driver
        self.timeout = timeout
        self.indications: list[Indication] = []
        self._done: dict[int, Completion] = {}
        self._waiting: set[int] = set()

    @classmethod
    def on_channel(cls, channel, config: NodeConfig | None = None, *,
                   rng: random.Random | None = None, **kwargs) -> "HeadEnd":
        """A head-end attached to an in-memory Channel (lon/channel.py)."""
        node = Node(config or head_end_config(), None, rng=rng, name="head-end")
        head_end = cls(node, channel, **kwargs)
        head_end.link = channel.attach(node)  # the channel's index, for connect/disconnect
        return head_end

    @classmethod
    def over_cnip(cls, url: str, config: NodeConfig | None = None, *,
                  rng: random.Random | None = None, **kwargs) -> "HeadEnd":
        """A head-end talking to a CN/IP endpoint (``udp://HOST:PORT``) over real UDP."""
        from ..cnip.client import CnipDriver

        node = Node(config or head_end_config(), None, rng=rng, name="head-end")
        return cls(node, CnipDriver(url, node), **kwargs)

    @classmethod
    def over_serial(cls, path: str, config: NodeConfig | None = None, *,
                    rng: random.Random | None = None, **kwargs) -> "HeadEnd":
        """A head-end behind a PLC network interface on the serial port (or pty) ``path``,
        speaking the U50 link in the host role (client/serial_driver.py)."""
        from .serial_driver import SerialDriver

        node = Node(config or head_end_config(), None, rng=rng, name="head-end")
        return cls(node, SerialDriver(path, node), **kwargs)

    def close(self) -> None:
        close = getattr(self.driver, "close", None)
        if close is not None:
            close()

    def now(self) -> float:
        """The driver's time: Channel.now is virtual seconds, CnipDriver.now() real ones."""
        now = self.driver.now
        return now() if callable(now) else now

    # Application (called by the node)
    def indicate(self, node: Node, indication: Indication, now: float):
        self.indications.append(indication)
        return None

    def completed(self, node: Node, completion: Completion, now: float) -> None:
        if completion.handle in self._waiting:
            self._done[completion.handle] = completion

    # sending
    def send(self, apdu: bytes, dst: Address, **options) -> int:
        handle = self.node.send(apdu, dst, self.now(), **options)
        self._waiting.add(handle)
        return handle

    def wait(self, handles: Iterable[int], timeout: float | None = None) -> list[Completion | None]:
        """Run the medium until every handle completed (or the time is up; None for those)."""
        handles = list(handles)
        self.driver.run_until(lambda: all(h in self._done for h in handles),
                              self.timeout if timeout is None else timeout)
        out = []
        for handle in handles:
            self._waiting.discard(handle)
            out.append(self._done.pop(handle, None))
        return out

    def transact(self, apdu: bytes, dst: Address, *, timeout: float | None = None,
                 **options) -> Completion | None:
        """Send one message and wait for its Completion (None: the time ran out first)."""
        return self.wait([self.send(apdu, dst, **options)], timeout)[0]

    def listen(self, duration: float, keep: Callable[[Indication], bool] = lambda i: True
               ) -> list[Indication]:
        """Run the medium for ``duration`` and return (and take) the indications kept."""
        end = self.now() + duration
        self.driver.run_until(lambda: self.now() >= end, duration)
        kept = [i for i in self.indications if keep(i)]
        self.indications = [i for i in self.indications if not keep(i)]
        return kept


# ---- naming meters -------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterRef:
    """How the head-end reaches one meter: by Neuron ID or subnet/node, in its domain
    (``domain_index`` 0) or the flex domain (None), optionally through repeaters (``path``:
    the repeaters' addresses, first hop first)."""
    neuron_id: bytes | None = None
    address: SubnetNode | None = None
    domain_index: int | None = 0
    path: tuple = ()

    def __post_init__(self):
        if self.neuron_id is None and self.address is None:
            raise ValueError("a meter needs a Neuron ID or a subnet/node address")

    @property
    def dst(self) -> Address:
        return NeuronId(self.neuron_id) if self.address is None else self.address

    @property
    def key(self) -> str:
        """The session key: one sequence number per meter, however it is addressed."""
        return self.neuron_id.hex().upper() if self.neuron_id else \
            f"{self.address.subnet}/{self.address.node}"

    def __str__(self) -> str:
        return self.key

    def via(self, *path) -> "MeterRef":
        return MeterRef(self.neuron_id, self.address, self.domain_index,
                        tuple(parse_address(p) for p in path))


def parse_address(value) -> SubnetNode | NeuronId:
    """'1/5' -> SubnetNode(1, 5); 12 hex digits -> NeuronId; addresses pass through."""
    if isinstance(value, (SubnetNode, NeuronId)):
        return value
    if isinstance(value, MeterRef):
        return value.address or NeuronId(value.neuron_id)
    text = str(value).strip()
    if "/" in text:
        subnet, _, node = text.partition("/")
        if not (subnet.isdigit() and node.isdigit() and 1 <= int(subnet) <= 255
                and 1 <= int(node) <= 127):
            raise ValueError(f"{value!r}: a subnet/node address is 1..255/1..127")
        return SubnetNode(int(subnet), int(node))
    try:
        nid = bytes.fromhex(text)
    except ValueError:
        nid = b""
    if len(nid) != 6:
        raise ValueError(f"{value!r} is neither a Neuron ID (12 hex digits) nor SUBNET/NODE")
    return NeuronId(nid)


def meter_ref(value, *, domain_index: int | None | str = "auto") -> MeterRef:
    """A MeterRef from a MeterRef, a DiscoveredMeter, a Neuron ID (6 bytes or 12 hex digits),
    ``SUBNET/NODE`` text or a SubnetNode. ``domain_index`` "auto": the head-end's domain (an
    uncommissioned meter takes a Neuron-ID-addressed message in any domain and answers in
    it, from 0/0 in its flex domain, as 14908.1 network tools rely on)."""
    if isinstance(value, MeterRef):
        return value
    if isinstance(value, DiscoveredMeter):
        return value.ref
    if isinstance(value, (bytes, bytearray)) and len(value) == 6:
        value = NeuronId(bytes(value))
    address = parse_address(value)
    index = 0 if domain_index == "auto" else domain_index
    if isinstance(address, NeuronId):
        return MeterRef(neuron_id=address.nid, domain_index=index)
    return MeterRef(address=address, domain_index=index)


@dataclass
class DiscoveredMeter:
    """One meter that answered discovery (ADD), with what it said about itself and the
    link (signal strength and margin in dB, hops through repeaters)."""
    neuron_id: bytes
    info: dict = field(default_factory=dict)
    strength_db: float | None = None
    margin_db: float | None = None
    hops: int = 0
    path: tuple = ()

    @property
    def ref(self) -> MeterRef:
        """By Neuron ID in the head-end's domain: reaches the meter commissioned or not."""
        return MeterRef(neuron_id=self.neuron_id, path=self.path)


# ---- load profile ---------------------------------------------------------------------------


@dataclass
class LoadProfile:
    """Data set 1 as the slides' recipe reads it: BT61 (geometry), BT62 (sources), BT63
    (status), then the valid BT64 blocks, oldest first, each parsed with BT64's layout."""
    geometry: object  # tables.load_profile.DataSetGeometry
    status: dict
    blocks: list  # parsed blocks: end_time, simple_status, intervals[channel_values]
    raw: bytes  # the valid blocks' bytes, oldest first


# ---- the OSGP client ------------------------------------------------------------------------


class PlcClient:
    """OSGP requests to meters through ``head_end``. ``key``: the OMA key (12 bytes for RC4,
    16 for AES); ``keys``: per-meter OMA keys of a fleet (fleet/keys.py), a mapping keyed by
    ``MeterRef.key`` or a callable taking the MeterRef, None/missing meaning ``key``;
    ``broadcast_key``: the secure-broadcast key (default: ``key``). ``model``: a profile (name
    or Profile) whose model meter gives the table sizes for whole-table reads."""

    def __init__(self, head_end: HeadEnd, key: bytes, *, mode: str = "rc4",
                 encrypt: bool = False, broadcast_key: bytes | None = None,
                 timeout: float | None = None, model="default",
                 rng: random.Random | None = None,
                 keys: Mapping[str, bytes] | Callable[[MeterRef], bytes | None] | None = None):
        self.head_end = head_end
        self.key = key
        self.keys = keys
        self.mode = mode
        self.encrypt = encrypt
        self.broadcast_key = broadcast_key or key
        self.timeout = timeout
        self._model = model
        self.rng = rng or random.Random()
        self._sessions: dict[str, object] = {}
        self._psn: dict[str, int] = {}

    # -- plumbing ------------------------------------------------------------------------
    def session(self, meter) -> object:
        """The meter's ClientSession (created on first use, sequence 0: the first answer
        tells the real number)."""
        from ..plc.secure import ClientSession

        ref = meter_ref(meter)
        session = self._sessions.get(ref.key)
        if session is None:
            session = ClientSession(self.key_for(ref), mode=self.mode, encrypt=self.encrypt)
            self._sessions[ref.key] = session
        return session

    def key_for(self, meter) -> bytes:
        """The meter's own OMA key when ``keys`` has one, else the client's ``key``."""
        ref = meter_ref(meter)
        if self.keys is None:
            return self.key
        own = self.keys(ref) if callable(self.keys) else self.keys.get(ref.key)
        return self.key if own is None else own

    def exchange(self, meter, apdu: bytes, request: str, *,
                 service: Service = Service.REQUEST) -> bytes:
        """One 14908.1 request to the meter (through its repeater path, if any); returns the
        response APDU. NoAnswer if none came."""
        ref = meter_ref(meter)
        if ref.path:
            return self._via_path(ref, apdu, request)
        done = self.head_end.transact(apdu, ref.dst, service=service,
                                      domain_index=ref.domain_index, timeout=self.timeout)
        return self._response(ref, done, request)

    def _response(self, ref: MeterRef, done: Completion | None, request: str) -> bytes:
        if done is None:
            raise NoAnswer(str(ref), request, "no completion before the time-out")
        if not done.ok or not done.responses:
            raise NoAnswer(str(ref), request, done.reason or "no response after the retries")
        return done.responses[0].apdu

    def _via_path(self, ref: MeterRef, apdu: bytes, request: str) -> bytes:
        """LTEP (lon/ltep.py): the request goes to the first repeater, which passes it on;
        the last one (the agent) sends it to the meter and relays its answer. Each head-end
        attempt outwaits one trip through the chain."""
        from ..lon import ltep
        from ..lon.timers import transmit_timer_s

        path = list(ref.path)
        target = MeterRef(ref.neuron_id, ref.address, ref.domain_index).dst
        hop = self.head_end.node.config.transmit_timer
        proxy = ltep.proxy_request(path, target, apdu, tx_timer=hop)
        need = (len(path) + 1) * transmit_timer_s(hop)  # one trip: every hop, there and back
        code = next((c for c in range(16) if transmit_timer_s(c) >= need), 15)
        done = self.head_end.transact(proxy, path[0], domain_index=0, tx_timer=code,
                                      timeout=self.timeout)
        what = f"{request} via {len(path)} repeater(s)"
        answer = self._response(ref, done, what)
        try:
            result = ltep.parse_proxy_response(answer)
        except ValueError as error:
            raise NoAnswer(str(ref), what, f"a malformed repeater answer: {error}") from None
        if not result.ok:
            hop = len(path) - 1 - result.failed_count
            where = f"repeater {path[hop]}" if 0 <= hop < len(path) else "a repeater"
            raise NoAnswer(str(ref), what, f"the path broke after {where} "
                                           f"(LTEP failure, count {result.failed_count})")
        return result.apdu

    def secured(self, meter, apdu: bytes, request: str) -> bytes:
        """A secured OSGP request (command ‖ parameters; the session adds the sequence number
        and digest). Returns the verified answer's data (after the OK code)."""
        from ..plc.secure import SecurityError

        ref = meter_ref(meter)
        session = self.session(ref)
        for attempt in range(2):
            answer = self.exchange(ref, session.request(apdu), request)
            try:
                plain = session.response(answer)
            except SecurityError as error:
                if error.code is not None:  # 0x0B: the meter does not take our digest
                    raise PlcError(str(ref), error.code, request,
                                   "wrong key or security mode?") from None
                if len(answer) == 1:  # a bare code, e.g. 0x06 when FCMs are rate-limited
                    raise PlcError(str(ref), answer[0], request, "unsigned answer") from None
                raise SecurityFailure(f"meter {ref} answered {request} with a response that "
                                      f"does not verify: {error}") from None
            code = plain[0]
            if code in RESYNC_CODES and attempt == 0:
                log.debug("meter %s: sequence resynchronised (%s); sending again", ref,
                          code_text(code))
                continue
            if code != ResponseCode.OK:
                raise PlcError(str(ref), code, request)
            return plain[1:]
        raise PlcError(str(ref), code, request, "again after the resynchronisation")

    # -- model ------------------------------------------------------------------------------
    def model_meter(self):
        """The meter the catalog's layouts are sized from (built once)."""
        if not hasattr(self._model, "table_bytes"):
            from ..device.meter import Meter
            from ..profile import load_profile

            profile = load_profile(self._model) if isinstance(self._model, str) else \
                self._model
            self._model = Meter(profile)
        return self._model

    def table_size(self, table: int) -> int:
        from ..tables import CATALOG

        number = table % 4096 if table < 8192 else table
        spec = CATALOG.get(number)
        if spec is None:
            raise ValueError(f"{label(table)} is not in the catalog: give offset and count")
        return spec.layout_for(self.model_meter()).sizeof()

    # -- table services -----------------------------------------------------------------
    def read_table(self, meter, table: int, offset: int | None = None,
                   count: int | None = None) -> bytes:
        """``count`` bytes at ``offset`` in partial reads of at most 84 bytes; without them
        the whole table: a full read when it fits one answer, else in parts of its catalog
        size."""
        if offset is None and count is None:
            size = None
            with contextlib.suppress(ValueError):  # not in the catalog: ask for all of it
                size = self.table_size(table)
            if size is None or size <= MAX_READ:
                data = self.secured(meter, bytes([FULL_READ]) + table.to_bytes(2, "big"),
                                    f"read {label(table)}")
                return self._read_data(meter, data, f"read {label(table)}")
            offset, count = 0, size
        offset = offset or 0
        if count is None:
            count = self.table_size(table) - offset
        out = bytearray()
        while len(out) < count:
            step = min(MAX_READ, count - len(out))
            at = offset + len(out)
            what = f"read {label(table)} offset {at} count {step}"
            data = self.secured(meter, bytes([PARTIAL_READ]) + table.to_bytes(2, "big")
                                + at.to_bytes(3, "big") + step.to_bytes(2, "big"), what)
            out += self._read_data(meter, data, what)
        return bytes(out)

    @staticmethod
    def _read_data(meter, data: bytes, what: str) -> bytes:
        length = int.from_bytes(data[:2], "big")
        if len(data) != 2 + length:
            raise ClientError(f"meter {meter_ref(meter)}: {what}: the answer carries "
                              f"{len(data) - 2} bytes, its count says {length}")
        return data[2:]

    def write_table(self, meter, table: int, data: bytes, offset: int | None = None) -> None:
        """A full write when ``offset`` is None and the data fits one request, else partial
        writes of at most 75 bytes."""
        if offset is None and len(data) <= MAX_WRITE:
            self.secured(meter, bytes([FULL_WRITE]) + table.to_bytes(2, "big")
                         + len(data).to_bytes(2, "big") + data, f"write {label(table)}")
            return
        offset = offset or 0
        for start in range(0, len(data), MAX_WRITE):
            part = data[start:start + MAX_WRITE]
            at = offset + start
            self.secured(meter, bytes([PARTIAL_WRITE]) + table.to_bytes(2, "big")
                         + at.to_bytes(3, "big") + len(part).to_bytes(2, "big") + part,
                         f"write {label(table)} offset {at} count {len(part)}")

    def run_procedure(self, meter, number: int, params: bytes = b"", selector: int = 0
                      ) -> tuple[int, bytes]:
        """BT07 write (number, selector, a new PSN, parameters) then BT08 read; returns (result
        code, response data). ``number``: BP n or 2048 + n for EP n."""
        ref = meter_ref(meter)
        word = (number | selector << 12).to_bytes(2, "little")
        name = _procedure_label(number)
        for attempt in range(2):
            psn = self._next_psn(ref)
            try:
                self.write_table(ref, BT07, word + bytes([psn]) + params)
                break
            except PlcError as error:  # the meter's last PSN is ours by chance: another one
                if error.code != ResponseCode.ONP or attempt:
                    raise PlcError(str(ref), error.code, f"{name} (BT07 write)") from None
        answer = self.read_table(ref, BT08)
        if answer[:3] != number.to_bytes(2, "little") + bytes([psn]):
            raise ClientError(f"meter {ref}: BT08 answers procedure "
                              f"{int.from_bytes(answer[:2], 'little')} PSN {answer[2]}, not "
                              f"{name} PSN {psn}")
        return answer[3], answer[4:]

    # duck-typed for client/firmware.py (it speaks to an OpticalClient the same way)
    def procedure(self, meter, number: int, params: bytes = b"") -> tuple[int, bytes]:
        return self.run_procedure(meter, number, params)

    def _next_psn(self, ref: MeterRef) -> int:
        """1..254 (never 0 or 255, the values a meter starts from), starting at random so a
        new client rarely repeats the meter's last PSN."""
        psn = self._psn.get(ref.key)
        psn = self.rng.randint(1, 254) if psn is None else psn % 254 + 1
        self._psn[ref.key] = psn
        return psn

    def read_load_profile(self, meter, data_set: int = 1) -> LoadProfile:
        """The slides' recipe: BT61 and BT62 for the set-up, BT63 for the valid blocks and
        the last one, then partial reads of those BT64 blocks (oldest first)."""
        from ..tables import CATALOG
        from ..tables.load_profile import DAILY_INTERVAL_TIME, DataSetGeometry, data_table_layout

        model = self.model_meter()
        index = data_set - 1
        bt61 = CATALOG[BT61].layout_for(model).parse(self.read_table(meter, BT61))
        bt62 = CATALOG[BT62].layout_for(model).parse(self.read_table(meter, BT62))
        bt63 = CATALOG[BT63].layout_for(model).parse(self.read_table(meter, BT63))
        dims = bt61.data_sets[index]
        control = bt62[f"data_set_{data_set}"]
        time_code = dims.maximum_interval_time
        geometry = DataSetGeometry(
            blocks=dims.number_of_blocks, intervals=dims.number_of_intervals,
            channels=dims.number_of_channels,
            interval_minutes=1440 if time_code == DAILY_INTERVAL_TIME else time_code,
            sources=tuple(c.interval_source for c in control.channels))
        status = bt63.data_sets[index]
        valid, last = status.number_of_valid_blocks, status.last_block
        raw = bytearray()
        block_layout = data_table_layout(DataSetGeometry(
            1, geometry.intervals, geometry.channels, geometry.interval_minutes))
        blocks = []
        for n in range(valid):
            block = (last - valid + 1 + n) % geometry.blocks
            data = self.read_table(meter, BT64 + index, block * geometry.block_size,
                                   geometry.block_size)
            raw += data
            blocks.append(block_layout.parse(data).blocks[0])
        plain_status = {k: v for k, v in status.items() if not k.startswith("_")}
        return LoadProfile(geometry, plain_status, blocks, bytes(raw))

    # -- network services (plc/services.py, lon/netmgmt.py) -----------------------------
    def discover(self, *, duration: float = 5.0, **options) -> list[DiscoveredMeter]:
        """ADD (plc/services.py): a discovery request broadcast in the global discovery
        domain; meters answer at random moments inside a window of about half ``duration``
        and the head-end collects answers until its last retry. ``options`` go to
        ``services.discovery_request`` (only_uncommissioned, first/last Neuron IDs, a hash
        slice ...). One entry per Neuron ID, sorted."""
        from ..lon.timers import transmit_timer_s
        from ..plc import services

        options.setdefault("window_s", min(25.5, round(duration / 2, 1)))
        request = services.discovery_request(**options)
        retries = 1
        # the head-end listens the whole ``duration`` (long timer codes past 6 s): on a real
        # line answers queue for airtime behind each other and arrive late in the window
        codes = [(c, long) for long in (False, True) for c in range(16)]
        code, long_timer = next(((c, long) for c, long in codes
                                 if (retries + 1) * transmit_timer_s(c, long) >= duration),
                                (15, True))
        handle = self.head_end.send(request, Broadcast(0), service=Service.REQUEST,
                                    domain_index=self.discovery_index(), retries=retries,
                                    tx_timer=code, long_timer=long_timer)
        done = self.head_end.wait([handle], duration * 2 + 5)[0]
        found: dict[bytes, DiscoveredMeter] = {}
        for response in (done.responses if done else ()):
            try:
                answer = services.parse_discovery_response(response.apdu, response.source)
            except ValueError as error:
                log.info("discovery: an answer that does not parse (%s): %s", error,
                         response.apdu.hex())
                continue
            info = {"program_id": answer.program_id, "state": answer.state,
                    "subnet": answer.subnet, "node": answer.node,
                    "serial_number": answer.serial_number}
            # both directions count: the minimum of what the meter and the head-end measured
            strength = _min_db(answer.link.strength_db, response.link.strength_db)
            margin = _min_db(answer.link.margin_db, response.link.margin_db)
            found[answer.neuron_id] = DiscoveredMeter(answer.neuron_id, info, strength, margin,
                                                      answer.hops)
        return sorted(found.values(), key=lambda m: m.neuron_id)

    def discovery_index(self) -> int:
        """The head-end's entry for the global discovery domain (head_end_config adds it)."""
        from ..plc.services import DISCOVERY_DOMAIN

        index = self.head_end.node.config.domain_index(DISCOVERY_DOMAIN)
        if index is None:
            raise ClientError("the head-end's node has no discovery domain entry "
                              "(build its config with head_end_config)")
        return index

    def commission(self, meter, subnet: int, node: int, **personality) -> MeterRef:
        """FCM (plc/services.py): the meter's whole network personality in one secured
        message, sent by Neuron ID in the discovery domain: the head-end's application
        domain, ``subnet``/``node`` and whatever else ``services.Personality`` takes
        (groups, broadcast_groups, unicast_key and broadcast_key: then the request is
        RC4-encrypted, keys never travel in clear). Returns the meter's reference at its new
        address."""
        from ..plc import services

        ref = meter_ref(meter)
        if ref.neuron_id is None:
            raise ValueError("commissioning needs the meter's Neuron ID")
        domain = self.head_end.node.config.domains[0]
        personality.setdefault("domain_id", domain.id)
        request = services.fcm_request(services.Personality(subnet=subnet, node=node,
                                                            **personality))
        by_nid = MeterRef(ref.neuron_id, None, self.discovery_index(), ref.path)
        session = self.session(ref)
        encrypt = session.encrypt
        session.encrypt = encrypt or personality.get("unicast_key") is not None
        try:
            self.secured(by_nid, request, f"FCM commission as {subnet}/{node}")
        finally:
            session.encrypt = encrypt
        return MeterRef(ref.neuron_id, SubnetNode(subnet, node), 0, ref.path)

    def topology(self, meter, hops: int = 0):
        """ATM: the meter's view of its links (services.TopologyReport: hops, primary and
        secondary carrier strength and margin)."""
        from ..plc import services

        answer = self.exchange(meter, services.atm_request(hops), "ATM")
        try:
            return services.parse_atm_response(answer)
        except ValueError as error:
            raise ClientError(f"meter {meter_ref(meter)}: ATM: {error}") from None

    def status(self, meter):
        """NM query status (ND 0x51, 0x56 in the flex domain): the node's error counters,
        reset cause and state (lon/netmgmt.py NodeStatus)."""
        from ..lon import netmgmt

        ref = meter_ref(meter)
        request = netmgmt.query_status(flex=ref.domain_index is None)
        answer = self.exchange(ref, request, "query status")
        try:
            return netmgmt.parse_status(answer, request)
        except netmgmt.NmError as error:
            raise self._nm_error(ref, error, "query status") from None

    def wink(self, meter) -> None:
        """NM wink (0x70 00): the meter shows it is the one."""
        from ..lon import netmgmt

        ref = meter_ref(meter)
        request = netmgmt.wink()
        answer = self.exchange(ref, request, "wink")
        try:
            netmgmt.response_data(request, answer)
        except netmgmt.NmError as error:
            raise self._nm_error(ref, error, "wink") from None

    @staticmethod
    def _nm_error(ref: MeterRef, error, request: str) -> ClientError:
        return ClientError(f"meter {ref} refused {request}: {error}")

    # -- firmware ------------------------------------------------------------------------
    def bound(self, meter) -> "BoundMeter":
        return BoundMeter(self, meter_ref(meter))

    def broadcast_firmware(self, group: int, image: bytes, meters: Iterable, *,
                           switch: bool = False, repeats: int = 1,
                           progress: Callable[[str], None] | None = None) -> dict:
        """A firmware image to the meters of secure-broadcast group ``group`` (EP27 done
        beforehand), in four steps a caller may also take one by one:
        ``prepare_firmware`` (each meter's inactive bank: EP08 unless ET17 shows a download
        under way), ``open_window`` (each meter's ET04 broadcast window), ``broadcast_packets``
        (every EP09 packet once as a secure broadcast) and ``fill_in_firmware`` (each meter's
        ET17, the packets it misses by unicast, EP10 with ``switch``). Returns per meter:
        packets received by broadcast, packets filled in, and after a switch bank and
        version."""
        refs = [meter_ref(m) for m in meters]
        count = self.prepare_firmware(image, refs)
        first = self.open_window(refs, count)
        self.broadcast_packets(group, image, first, domain_index=refs[0].domain_index,
                               repeats=repeats)
        if progress:
            progress(f"broadcast {count} packets to group 0x{group:04X}")
        return self.fill_in_firmware(image, refs, switch=switch, progress=progress)

    def prepare_firmware(self, image: bytes, meters: Iterable) -> int:
        """Erase each meter's inactive bank unless a download is under way; returns the
        image's packet count."""
        count = firmware.packet_count(firmware.image_info(image).length)
        for ref in meters:
            handle = self.bound(ref)
            if not firmware.received(handle, count):
                firmware.call(handle, firmware.EP08, b"", "EP08 erase code bank")
        return count

    def broadcast_packets(self, group: int, image: bytes, sequence: int, *,
                          domain_index: int | None = 0, repeats: int = 1) -> int:
        """Every EP09 packet of ``image`` as a secure broadcast (a BT07 full write) to
        ``group``, numbered from ``sequence``; returns the next sequence number."""
        from ..plc.secure import BroadcastSession

        session = BroadcastSession(self.broadcast_key, group=group, sequence=sequence,
                                   mode=self.mode)
        count = firmware.packet_count(len(image))
        psn = self.rng.randint(1, 254)
        word = firmware.EP09.to_bytes(2, "little")
        for number in range(count):
            psn = psn % 254 + 1
            written = word + bytes([psn]) + firmware.packet_params(image, number)
            apdu = (bytes([FULL_WRITE]) + BT07.to_bytes(2, "big")
                    + len(written).to_bytes(2, "big") + written)
            self.head_end.transact(session.request(apdu), Broadcast(0),
                                   service=Service.UNACKD_RPT, domain_index=domain_index,
                                   retries=repeats, timeout=self.timeout)
        return session.sequence

    def fill_in_firmware(self, image: bytes, meters: Iterable, *, switch: bool = False,
                         progress: Callable[[str], None] | None = None) -> dict:
        """Per meter: what ET17 shows, the missing packets by unicast, EP10 with
        ``switch``."""
        count = firmware.packet_count(len(image))
        report = {}
        for ref in meters:
            handle = self.bound(ref)
            have = firmware.received(handle, count)
            summary = firmware.download(handle, image)
            entry = {"broadcast": len(have), "filled_in": summary.sent - (0 in have)}
            if switch:
                entry["bank"], entry["version"] = firmware.switch(handle)
            report[str(ref)] = entry
            if progress:
                progress(f"meter {ref}: " + " ".join(f"{k}={v}" for k, v in entry.items()))
        return report

    def open_window(self, meters: Iterable, count: int) -> int:
        """Move every member's ET04 broadcast window (base, delta: offsets 82 and 86) past
        all its earlier broadcasts, wide enough for ``count`` messages; returns the first
        sequence number to send (base + 1)."""
        refs = [meter_ref(m) for m in meters]
        base = 0
        for ref in refs:
            raw = self.read_table(ref, ET04, ET04_BROADCAST_BASE, 6)
            base = max(base, int.from_bytes(raw[:4], "little") + int.from_bytes(raw[4:], "little"))
        window = base.to_bytes(4, "little") + min(count, 0xFFFF).to_bytes(2, "little")
        for ref in refs:
            self.write_table(ref, ET04, window, ET04_BROADCAST_BASE)
        return base + 1


def _min_db(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _procedure_label(number: int) -> str:
    return f"EP{number - 2048:02d}" if number >= 2048 else f"BP{number:02d}"


class BoundMeter:
    """One meter of a PlcClient with an OpticalClient's read/procedure methods, so the
    download logic of client/firmware.py runs over the power line unchanged."""

    def __init__(self, client: PlcClient, ref: MeterRef):
        self.client, self.ref = client, ref

    def read(self, table: int, offset: int | None = None, count: int | None = None) -> bytes:
        return self.client.read_table(self.ref, table, offset, count)

    def read_range(self, table: int, offset: int, count: int) -> bytes:
        return self.client.read_table(self.ref, table, offset, count)

    def write(self, table: int, data: bytes, offset: int | None = None) -> None:
        self.client.write_table(self.ref, table, data, offset)

    def procedure(self, number: int, params: bytes = b"", selector: int = 0
                  ) -> tuple[int, bytes]:
        return self.client.run_procedure(self.ref, number, params, selector)
