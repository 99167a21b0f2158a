"""A meter on the power line: its 14908.1 node and the application that answers what the node
delivers. Every medium (the in-memory channel, the CN/IP endpoint, the PHY) attaches stations.

Dispatch by the APDU's first byte (reference/lower-layers.md section 5.1; DESIGN.md D1, D5):

* 0x50-0x7F network diagnostics and management: lon/netmgmt.py;
* 0x4D LTEP proxy (repeating): lon/ltep.py;
* 0x41-0x43 the OSGP network services FCM, ADD, ATM (designed codes): plc/services.py;
* 0x30, 0x3F, 0x40, 0x4F the OSGP table services, secured: plc/server.py (unicast, and secure
  broadcast when the message came by broadcast or group addressing);
* anything else in a REQUEST: 0x02 Service Not Supported (an unsigned, bare response code).

The node's configuration lives in the meter's state (subsystem ``lon``), so commissioning
survives restarts; a station created for a meter with no such state starts from the profile
(Neuron ID, program ID, subnet/node: a meter with a subnet in its profile is commissioned in
the profile's domain).
"""

from __future__ import annotations

import logging
import random
from typing import Callable

from ..device.errors import ResponseCode
from ..lon.config import CONFIGURED, HARD_OFFLINE, SOFT_OFFLINE, UNCONFIGURED, Domain, NodeConfig
from ..lon.node import Completion, Indication, Node, Service
from . import FCM, ADD, ATM, LTEP_FAILURE, LTEP_SUCCESS, OSGP_COMMANDS

log = logging.getLogger(__name__)

#: the subsystem of the meter state holding the node configuration
SUBSYSTEM = "lon"


def profile_config(meter) -> NodeConfig:
    """The node configuration a meter leaves the factory with (or its profile commissions)."""
    ident = meter.profile.identity
    config = NodeConfig(neuron_id=bytes.fromhex(ident.neuron_id),
                        program_id=bytes.fromhex(ident.program_id))
    domain = meter.profile.data.get("plc", {}).get("domain")
    if ident.subnet and ident.node:
        config.domains.append(Domain(bytes.fromhex(domain or ""), ident.subnet, ident.node))
        config.state = CONFIGURED
    else:
        config.state = UNCONFIGURED
    return config


class MeterStation:
    """``meter`` behind a 14908.1 node. ``clock`` is the meter's (virtual) clock, used for
    table operations; the stack time the medium passes in runs the node's timers."""

    def __init__(self, meter, clock, *, rng: random.Random | None = None):
        self.meter = meter
        self.clock = clock
        self.rng = rng or random.Random()
        stored = meter.state.subsystems.get(SUBSYSTEM, {}).get("config")
        config = NodeConfig.from_doc(stored) if stored else profile_config(meter)
        from .services import join_discovery_domain
        join_discovery_domain(config)  # every OSGP meter is in it from the factory (D5)
        self.node = Node(config, self, rng=self.rng, name=meter.id)
        self._callbacks: dict[int, Callable[[Completion, float], None]] = {}
        from .server import PlcServer  # the OSGP application proper
        self.server = PlcServer(meter, clock)

    @property
    def config(self) -> NodeConfig:
        return self.node.config

    def save_config(self) -> None:
        """Persist the node configuration (network management and FCM call it after a change;
        the medium persists the meter before the answer leaves)."""
        self.config.changed()
        self.meter.subsystem(SUBSYSTEM)["config"] = self.config.to_doc()
        self.meter.dirty = True

    def send(self, apdu: bytes, dst, now: float, *,
             on_done: Callable[[Completion, float], None] | None = None, **options) -> int:
        """Originate a message from this meter (repeating, service pin, discovery answers);
        ``on_done`` gets its Completion."""
        handle = self.node.send(apdu, dst, now, **options)
        if on_done is not None:
            self._callbacks[handle] = on_done
        return handle

    # -- Application (called by the node) ------------------------------------------------

    def indicate(self, node: Node, ind: Indication, now: float):
        code = ind.apdu[0] if ind.apdu else -1
        try:
            if 0x50 <= code <= 0x7F:
                from ..lon import netmgmt
                return netmgmt.handle(self, ind, now)
            if self.config.state in (HARD_OFFLINE, SOFT_OFFLINE):
                log.info("%s: offline (state %d): APDU 0x%02X not served", self.meter.id,
                         self.config.state, code & 0xFF)
                return None  # no answer: the head-end times out, as with an offline Neuron
            if code in (LTEP_SUCCESS, LTEP_FAILURE):
                from ..lon import ltep
                return ltep.handle(self, ind, now)
            if code in (FCM, ADD, ATM):
                from . import services
                return services.handle(self, ind, now)
            if code in OSGP_COMMANDS:
                return self.server.handle(ind, now)
        except Exception:  # noqa: BLE001 - a bug costs one answer, never the fleet
            log.exception("%s: internal error on APDU %s", self.meter.id, ind.apdu[:1].hex())
            return bytes([ResponseCode.ERR]) if ind.service == Service.REQUEST else None
        log.debug("%s: APDU code 0x%02X is not served", self.meter.id, code & 0xFF)
        return bytes([ResponseCode.SNS]) if ind.service == Service.REQUEST else None

    def completed(self, node: Node, completion: Completion, now: float) -> None:
        callback = self._callbacks.pop(completion.handle, None)
        if callback is not None:
            callback(completion, now)
