"""LTEP repeating (lon/ltep.py): the 0x4D request byte by byte (reference/lower-layers.md
section 8.3), a secured OSGP read through a chain of 5 repeaters relayed back byte-exact,
0x4C with the count of the failing hop, chains of 15, malformed requests."""

from __future__ import annotations

import random

import pytest

from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter
from meter_emu.lon import ltep
from meter_emu.lon.channel import Channel
from meter_emu.lon.config import CONFIGURED, Domain, NodeConfig
from meter_emu.lon.frame import (RESPONSE, Broadcast, Group, NeuronId, Spdu, SubnetNode,
                                 decode)
from meter_emu.lon.ltep import Agent, Forward, LtepError, parse_request, proxy_request
from meter_emu.lon.node import Node, Service
from meter_emu.plc import services
from meter_emu.plc.secure import ClientSession
from meter_emu.plc.station import MeterStation
from meter_emu.profile import fleet_profiles, load_profile
from conftest import CompletionsApp

APP_DOMAIN = bytes.fromhex("123456")
READ_BT01 = b"\x3f\x00\x01\x00\x00\x00\x00\x10"  # partial read of BT01, 16 bytes at 0


# ---------------------------------------------------------------------------------------
# The format (section 8.3)

def test_request_layout_byte_by_byte():
    path = [SubnetNode(1, 1), SubnetNode(2, 2), SubnetNode(3, 3)]
    apdu = proxy_request(path, SubnetNode(4, 9), b"\x30\x00\x01", retries=2, tx_timer=8,
                         repeater_retries=3, repeater_tx_timer=10)
    assert apdu == bytes([
        0x4D, 0x02,  # hdr: no flags, 2 repeaters after the first
        2, 2, 3, 3,  # subnet + [path|node] each (the path spans subnets)
        0x3A,  # repeaters' txctrl: retry 3, timer 10
        (1 << 5) | (3 << 2),  # sicb: subnet/node target, REQUEST, normal mode
        0x28,  # agent's txctrl: retry 2, timer 8
        4, 9,  # target
        0x30, 0x00, 0x01])  # target APDU
    uniform = proxy_request([SubnetNode(5, 1), SubnetNode(5, 7)], NeuronId(b"ABCDEF", 0),
                            b"\x43", retries=1, tx_timer=6, long_timer=True)
    assert uniform == bytes([0x4D, 0x80 | 0x40 | 1, 7, 0x16, 0x4C, 0x16, 0]) + b"ABCDEF\x43"


def test_a_repeater_strips_its_hop_and_the_txctrl_at_the_last_one():
    apdu = proxy_request([SubnetNode(1, 1), SubnetNode(2, 2), SubnetNode(3, 3)],
                         SubnetNode(4, 9), b"\x30\x00\x01", retries=2, tx_timer=8)
    first = parse_request(apdu)
    assert isinstance(first, Forward) and first.count == 2
    assert first.next_hop == SubnetNode(2, 2) and (first.retries, first.tx_timer) == (2, 8)
    assert first.apdu == bytes([0x4D, 0x01, 3, 3, 0x28]) + apdu[7:]
    second = parse_request(first.apdu)
    assert second.next_hop == SubnetNode(3, 3)
    assert second.apdu == bytes([0x4D, 0x00]) + apdu[7:]  # the repeaters' txctrl is gone
    agent = parse_request(second.apdu)
    assert agent == Agent(SubnetNode(4, 9), Service.REQUEST, 2, 8, False, None, 0,
                          b"\x30\x00\x01")


@pytest.mark.parametrize("kind, address, target", [
    (0, b"\x07\x05", Group(7)),
    (1, b"\x04\x89", SubnetNode(4, 9)),
    (2, b"\x04ABCDEF", NeuronId(b"ABCDEF", 4)),
    (3, b"\x00\x0f", Broadcast(0)),
    (4, b"\x07", Group(7)),
    (5, b"\x09", SubnetNode(8, 9)),  # the sender's subnet
    (6, b"ABCDEF", NeuronId(b"ABCDEF", 0)),
    (7, b"\x09", SubnetNode(6, 9)),  # our own subnet
])
def test_every_target_address_type(kind, address, target):
    apdu = bytes([0x4D, 0x00, (kind << 5) | 0x10 | (2 << 2) | 1, 0x11]) + address + b"\x31"
    agent = parse_request(apdu, own_subnet=6, source_subnet=8)
    assert agent.target == target and agent.service == Service.UNACKD and agent.apdu == b"\x31"
    assert agent.expected == (5 if kind == 0 else None)


def test_alternate_key_is_skipped_by_its_length():
    six = bytes([0x4D, 0x00, (1 << 5) | 2, 0x11, 0x00]) + bytes(6) + b"\x04\x09\x31"
    twelve = bytes([0x4D, 0x00, (1 << 5) | 2, 0x11, 0x01]) + bytes(12) + b"\x04\x09\x31"
    for apdu in (six, twelve):
        agent = parse_request(apdu)
        assert agent.target == SubnetNode(4, 9) and agent.apdu == b"\x31" and agent.mode == 2


def test_parse_request_raises_only_ltep_error_on_arbitrary_bytes():
    rng = random.Random(5)
    for _ in range(5000):
        apdu = b"\x4D" + rng.randbytes(rng.randrange(0, 30))
        try:
            parse_request(apdu, own_subnet=rng.randrange(256), source_subnet=rng.randrange(256))
        except LtepError:
            pass


def test_proxy_response_parsing():
    assert ltep.parse_proxy_response(b"\x4C\x03").failed_count == 3
    assert ltep.parse_proxy_response(b"\x4D\x00\x01").apdu == b"\x00\x01"
    multi = ltep.parse_proxy_response(b"\x4D\x03\x02\x01\x05\xAA\xBB\x01\x02\x06\xCC",
                                      multi=True)
    assert multi.total == 3
    assert multi.answers == ((SubnetNode(1, 5), b"\xAA\xBB"), (SubnetNode(2, 6), b"\xCC"))
    for bad in (b"\x4C", b"\x00", b"\x4D\x01\x05\x01"):
        with pytest.raises(LtepError):
            ltep.parse_proxy_response(bad, multi=True)


# ---------------------------------------------------------------------------------------
# On a channel

HeadApp = CompletionsApp


class Line:
    """head-end (0) - meter 1 - meter 2 - ... - meter n: each hears only its neighbours."""

    def __init__(self, count):
        self.channel = Channel(rng=random.Random(3))
        self.app = HeadApp()
        config = NodeConfig(bytes.fromhex("FEEDFACE0001"), [Domain(APP_DOMAIN, 1, 100)],
                            state=CONFIGURED)
        self.head = Node(config, self.app, rng=random.Random(1), name="head-end")
        self.channel.attach(self.head)
        profiles = fleet_profiles(load_profile(overrides=[
            "identity.subnet=1", "identity.node=1", 'plc.domain="123456"']), count)
        self.stations = []
        for index, profile in enumerate(profiles):
            station = MeterStation(Meter(profile), ManualClock(), rng=random.Random(index))
            self.channel.attach_station(station)
            self.stations.append(station)
        for index in range(count):
            self.channel.connect(index, index + 1)
        self.frames = []
        self.channel.taps.append(lambda frame, sender, now: self.frames.append((sender, frame)))

    def proxy(self, hops: list[int], target: int, apdu: bytes, *, tx_timer=8, retries=2,
              multi=False):
        path = [SubnetNode(1, n) for n in hops]
        request = proxy_request(path, SubnetNode(1, target), apdu, tx_timer=tx_timer,
                                retries=retries)
        handle = self.head.send(request, path[0], self.channel.now, tx_timer=tx_timer,
                                retries=retries,
                                extend_last_s=ltep.proxy_extension_s(path, tx_timer))
        self.channel.wake(self.head)
        assert self.channel.run_until(lambda: handle in self.app.done, 120)
        completion = self.app.done[handle]
        assert completion.ok, completion.reason
        return completion.responses[0].apdu


def test_secured_read_through_a_chain_of_5_repeaters_is_relayed_byte_exact():
    line = Line(6)
    target = line.stations[5]
    session = ClientSession(target.meter.profile.oma_key())
    answer = line.proxy([1, 2, 3, 4, 5], 6, session.request(READ_BT01))
    result = ltep.parse_proxy_response(answer)
    assert result.ok
    # the target's own response frame carried exactly the bytes the head-end got back
    sent = [decode(f).npdu.pdu for sender, f in line.frames if sender == 6]
    responses = [p.apdu for p in sent if isinstance(p, Spdu) and p.type == RESPONSE]
    assert responses == [result.apdu]
    assert session.response(result.apdu) == b"\x00\x00\x10" + target.meter.table_bytes(1, 0.0)[
        :16]
    # every hop forwarded once: meter k sent one REQUEST (k < 6)
    for k in range(1, 6):
        requests = [p for s, f in line.frames if s == k
                    for p in [decode(f).npdu.pdu] if isinstance(p, Spdu) and p.type == 0]
        assert len(requests) == 1


def test_a_hop_down_answers_4c_with_the_count_of_the_failing_node():
    line = Line(6)
    line.channel.disconnect(3, 4)  # meter 3 (count 2 when it receives) cannot reach meter 4
    assert line.proxy([1, 2, 3, 4, 5], 6, b"\x30\x00\x01") == b"\x4C\x02"
    line.channel.connect(3, 4)
    line.channel.disconnect(5, 6)  # the agent's target is gone
    assert line.proxy([1, 2, 3, 4, 5], 6, b"\x30\x00\x01") == b"\x4C\x00"


def test_a_chain_of_15_repeaters():
    line = Line(16)
    answer = line.proxy(list(range(1, 16)), 16, services.atm_request(hops=15), tx_timer=6)
    report = services.parse_atm_response(ltep.parse_proxy_response(answer).apdu)
    assert report.hops == 15


def test_an_ackd_target_answers_4d_alone():
    line = Line(3)
    request = proxy_request([SubnetNode(1, 1), SubnetNode(1, 2)], SubnetNode(1, 3),
                            services.atm_request(), service=Service.ACKD, tx_timer=6)
    handle = line.head.send(request, SubnetNode(1, 1), 0.0, tx_timer=8,
                            extend_last_s=ltep.proxy_extension_s([1, 2], 8))
    line.channel.wake(line.head)
    assert line.channel.run_until(lambda: handle in line.app.done, 60)
    assert line.app.done[handle].responses[0].apdu == b"\x4D"


def test_malformed_requests_answer_4c_with_the_count():
    line = Line(2)

    def send(apdu):
        handle = line.head.send(apdu, SubnetNode(1, 1), line.channel.now, tx_timer=6)
        line.channel.wake(line.head)
        assert line.channel.run_until(lambda: handle in line.app.done, 30)
        return line.app.done[handle]

    def ask(apdu):
        return send(apdu).responses[0].apdu

    assert ask(b"\x4D") == b"\x4C\x00"
    assert ask(b"\x4D\x03\x01\x02") == b"\x4C\x03"  # 3 repeaters announced, none there
    assert ask(b"\x4D\x00\x20\x11") == b"\x4C\x00"  # agent without a target
    assert ask(b"\x4D\x01\x00\x05\x11\x20\x11\x01\x02\x30") == b"\x4C\x01"  # repeater 0/5
    alt_key = bytes([0x4D, 0x00, (1 << 5) | (3 << 2) | 2, 0x11, 0]) + bytes(6) + b"\x01\x02\x43"
    assert ask(alt_key) == b"\x4C\x00"  # alternate keys are not supported
    assert send(b"\x4C\x00").responses == ()  # a failure code as a request: dropped
    assert ask(services.atm_request())[0] == 0  # and the meter still answers
