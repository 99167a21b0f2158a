"""A node's network personality (ISO/IEC 14908.1 "configuration"): its Neuron ID, up to two
domains with their subnet/node address and authentication key, group memberships, timers and
node state. Network management (netmgmt.py) and the Fast Commission Message change it; the meter
keeps it (``to_doc``/``from_doc``) in its state so commissioning survives a restart.

A domain's key is 6 bytes (classic 48-bit authentication) or 12 bytes (the OMA 96-bit variant,
section 4.5 of reference/lower-layers.md). Node states follow 14908.1: 2 unconfigured, 4
configured (online), 6 hard offline, 12 configured soft offline (ET04.72 "Neuron State" shows
it; 3, applicationless, a meter never is).
"""

from __future__ import annotations

from dataclasses import dataclass, field

UNCONFIGURED, HARD_OFFLINE, CONFIGURED, SOFT_OFFLINE = 2, 6, 4, 12


@dataclass
class Domain:
    id: bytes  # 0, 1, 3 or 6 bytes
    subnet: int  # 1..255
    node: int  # 1..127
    key: bytes = bytes(6)  # 6 bytes, or 12 for OMA authentication

    def to_doc(self) -> dict:
        return {"id": self.id.hex(), "subnet": self.subnet, "node": self.node,
                "key": self.key.hex()}

    @classmethod
    def from_doc(cls, doc: dict) -> "Domain":
        return cls(bytes.fromhex(doc["id"]), doc["subnet"], doc["node"],
                   bytes.fromhex(doc["key"]))


@dataclass
class Membership:
    """One group this node belongs to, in one domain: its member number (0-63, used in group
    acknowledgements), the group's size (0 = unacknowledged group) and receive timer code."""
    group: int
    member: int = 0
    size: int = 0
    domain_index: int = 0
    receive_timer: int = 8  # 4-bit code (timers.py): 2048 ms


@dataclass
class NodeConfig:
    neuron_id: bytes
    domains: list[Domain] = field(default_factory=list)  # at most 2
    groups: list[Membership] = field(default_factory=list)  # at most 15 (address table)
    state: int = UNCONFIGURED
    program_id: bytes = bytes(8)
    non_group_receive_timer: int = 8  # 4-bit code
    transmit_timer: int = 10  # 4-bit code for unicast ACKD/REQUEST: 512 ms
    retry_count: int = 3
    #: bumped on every change, so a medium can re-index the node's addresses cheaply
    version: int = 0

    @property
    def configured(self) -> bool:
        return self.state in (CONFIGURED, SOFT_OFFLINE) and bool(self.domains)

    def domain_index(self, domain_id: bytes) -> int | None:
        """Which of this node's domains ``domain_id`` is (None: the flex domain)."""
        for index, domain in enumerate(self.domains):
            if domain.id == domain_id:
                return index
        return None

    def changed(self) -> None:
        self.version += 1

    def to_doc(self) -> dict:
        return {
            "neuron_id": self.neuron_id.hex(),
            "domains": [d.to_doc() for d in self.domains],
            "groups": [vars(g).copy() for g in self.groups],
            "state": self.state,
            "program_id": self.program_id.hex(),
            "non_group_receive_timer": self.non_group_receive_timer,
            "transmit_timer": self.transmit_timer,
            "retry_count": self.retry_count,
        }

    @classmethod
    def from_doc(cls, doc: dict) -> "NodeConfig":
        return cls(
            neuron_id=bytes.fromhex(doc["neuron_id"]),
            domains=[Domain.from_doc(d) for d in doc.get("domains", [])],
            groups=[Membership(**g) for g in doc.get("groups", [])],
            state=doc.get("state", UNCONFIGURED),
            program_id=bytes.fromhex(doc.get("program_id", "00" * 8)),
            non_group_receive_timer=doc.get("non_group_receive_timer", 8),
            transmit_timer=doc.get("transmit_timer", 10),
            retry_count=doc.get("retry_count", 3),
        )
