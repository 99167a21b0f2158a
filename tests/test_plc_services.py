"""OSGP network services (plc/services.py): discovery of 50 meters in the global discovery
domain, commissioning by FCM (and its refusals), ATM, discovery through an uncommissioned
repeater, malformed requests. Real MeterStations on the in-memory Channel, a head-end Node."""

from __future__ import annotations

import random

import pytest

from meter_emu.clock import ManualClock
from meter_emu.device import keys
from meter_emu.device.meter import Meter
from meter_emu.lon import ltep
from meter_emu.lon.channel import Channel
from meter_emu.lon.config import CONFIGURED, UNCONFIGURED, Domain, Membership, NodeConfig
from meter_emu.lon.frame import Broadcast, NeuronId, SubnetNode
from meter_emu.lon.node import DEFER, Indication, LinkInfo, Node, Service
from meter_emu.plc import services
from meter_emu.plc.secure import ClientSession, SecurityError
from meter_emu.plc.services import (
    DISCOVERY_DOMAIN, Personality, atm_request, discovery_request, fcm_challenge, fcm_request,
    headend_domain, parse_atm_response, parse_discovery_response)
from meter_emu.plc.station import MeterStation
from meter_emu.profile import fleet_profiles, load_profile
from meter_emu.tables.catalog import et
from meter_emu.tables.extended import _ET04
from meter_emu.tables.system import broadcast_groups
from conftest import CompletionsApp

APP_DOMAIN = bytes.fromhex("123456")
HEAD_NID = bytes.fromhex("FEEDFACE0001")


HeadApp = CompletionsApp


class Rig:
    """A channel with a head-end node (index 0) and meters."""

    def __init__(self, profiles, *, head_domains=None, links=None):
        self.channel = Channel(rng=random.Random(7))
        domains = head_domains or [headend_domain()]
        self.app = HeadApp()
        self.head = Node(NodeConfig(HEAD_NID, domains=domains, state=CONFIGURED), self.app,
                         rng=random.Random(1), name="head-end")
        self.channel.attach(self.head)
        self.stations = []
        for index, profile in enumerate(profiles):
            station = MeterStation(Meter(profile), ManualClock(), rng=random.Random(index))
            services.join_discovery_domain(station.config)
            self.channel.attach_station(station)
            self.stations.append(station)

    def request(self, apdu, dst, *, timeout=60.0, **options):
        handle = self.head.send(apdu, dst, self.channel.now, **options)
        self.channel.wake(self.head)
        assert self.channel.run_until(lambda: handle in self.app.done, timeout)
        return self.app.done[handle]

    def ask(self, apdu, dst, **options) -> bytes:
        completion = self.request(apdu, dst, **options)
        assert completion.ok, completion.reason
        return completion.responses[0].apdu


def fleet(count, *overrides):
    return fleet_profiles(load_profile(overrides=list(overrides)), count)


def secured(rig, session, apdu, dst, **options) -> bytes:
    """One secured request with the one retry a head-end makes after 0x0C."""
    for _ in range(2):
        answer = session.response(rig.ask(session.request(apdu), dst, **options))
        if answer not in (b"\x0c", b"\x1f"):
            return answer
    raise AssertionError("sequence not adopted")


def oma(profile) -> bytes:
    return profile.oma_key()


# ---------------------------------------------------------------------------------------
# Discovery

def test_discovery_of_50_meters_finds_each_once_with_its_signal_data():
    profiles = fleet(50)
    rig = Rig(profiles)
    for index in range(50):  # a star: each meter hears the head-end at its own level
        rig.channel.connect(0, index + 1, strength_db=40.0 + index * 0.5,
                            margin_db=6.0 + index * 0.1)
    completion = rig.request(discovery_request(window_s=2.0), Broadcast(0), tx_timer=14,
                             retries=1)
    answers = [parse_discovery_response(r.apdu, r.source) for r in completion.responses]
    found = [a.neuron_id for a in answers]
    expected = [bytes.fromhex(p.identity.neuron_id) for p in profiles]
    assert sorted(found) == sorted(expected)  # every meter, each once
    by_nid = {a.neuron_id: a for a in answers}
    for index, profile in enumerate(profiles):
        answer = by_nid[bytes.fromhex(profile.identity.neuron_id)]
        assert answer.program_id == bytes.fromhex(profile.identity.program_id)
        assert answer.serial_number == profile.identity.serial_number
        assert (answer.state, answer.subnet, answer.node, answer.hops) == (UNCONFIGURED, 0, 0, 0)
        assert answer.link.measured and answer.link.this_carrier
        assert answer.link.strength_db == pytest.approx(40.0 + index * 0.5)
        assert answer.link.margin_db == pytest.approx(6.0 + index * 0.1)


def test_discovery_answers_are_spread_over_the_window():
    rig = Rig(fleet(20))
    first = {}  # each meter's first answer (a retry gets the stored answer again, later)
    rig.channel.taps.append(lambda frame, sender, now: sender and first.setdefault(sender, now))
    completion = rig.request(discovery_request(window_s=2.0), Broadcast(0), tx_timer=14,
                             retries=1)
    assert len(completion.responses) == 20 == len(first)
    assert max(first.values()) - min(first.values()) > 1.0
    assert max(first.values()) <= 2.0 + rig.channel.latency


def test_discovery_selection_slices_range_and_uncommissioned_only():
    profiles = fleet(12)
    rig = Rig(profiles)
    nids = sorted(bytes.fromhex(p.identity.neuron_id) for p in profiles)

    def found(apdu):
        completion = rig.request(apdu, Broadcast(0), tx_timer=8, retries=0)
        return sorted(parse_discovery_response(r.apdu).neuron_id for r in completion.responses)

    slices = [found(discovery_request(window_s=0, modulus=3, remainder=r)) for r in range(3)]
    assert sorted(sum(slices, [])) == nids  # the slices partition the fleet
    assert found(discovery_request(window_s=0, first=nids[2], last=nids[5])) == nids[2:6]
    commission(rig, rig.stations[0], 1, 10)
    remaining = found(discovery_request(window_s=0, only_uncommissioned=True))
    assert remaining == sorted(set(nids) - {rig.stations[0].config.neuron_id})


def test_discovery_in_flex_or_app_domains_does_not_reach_other_domains():
    rig = Rig(fleet(3, "identity.subnet=1", "identity.node=1", "plc.domain=\"123456\""),
              head_domains=[headend_domain(), Domain(b"\x99", 1, 100)])
    completion = rig.request(discovery_request(window_s=0), Broadcast(0), domain_index=1,
                             tx_timer=6, retries=0)
    assert completion.responses == ()


# ---------------------------------------------------------------------------------------
# FCM

def commission(rig, station, subnet, node, *, groups=(), broadcast=(), key=None, **kw):
    profile = station.meter.profile
    session = ClientSession(key or oma(profile), sequence=0, **kw.pop("session", {}))
    personality = Personality(APP_DOMAIN, subnet, node, bytes(range(6)), list(groups),
                              list(broadcast), **kw)
    index = rig.head.config.domain_index(DISCOVERY_DOMAIN)
    return secured(rig, session, fcm_request(personality), NeuronId(station.config.neuron_id),
                   domain_index=index)


def test_commissioning_by_fcm_then_meters_answer_in_their_new_domain():
    profiles = fleet(4)
    rig = Rig(profiles, head_domains=[Domain(APP_DOMAIN, 1, 100), headend_domain()])
    for number, station in enumerate(rig.stations, start=1):
        groups = [Membership(7, member=number, size=5)]
        assert commission(rig, station, 1, number, groups=groups,
                          broadcast=[0x0101, 0x02FF]) == b"\x00"
    for number, station in enumerate(rig.stations, start=1):
        config, meter = station.config, station.meter
        assert config.state == CONFIGURED
        assert config.domains[0] == Domain(APP_DOMAIN, 1, number, bytes(range(6)))
        assert config.domains[1].id == DISCOVERY_DOMAIN
        assert config.groups == [Membership(7, number, 5, 0, 8)]
        assert meter.state.subsystems["lon"]["config"]["domains"][0]["node"] == number
        assert broadcast_groups(meter) == [0x0101, 0x02FF]
        et04 = _ET04.parse(meter.table_bytes(et(4), 0.0))
        assert (et04.subnet_id, et04.node_id, et04.neuron_state) == (1, number, CONFIGURED)
        assert et04.fcm_message_count == 1
        # a secured partial read at the new address, in the application domain
        session = ClientSession(oma(meter.profile))
        answer = secured(rig, session, b"\x3f\x00\x01\x00\x00\x00\x00\x10",
                         SubnetNode(1, number), domain_index=0)
        assert answer == b"\x00\x00\x10" + meter.table_bytes(1, 0.0)[:16]
    # the discovery answer now reports the application address
    completion = rig.request(discovery_request(window_s=0), Broadcast(0), domain_index=1,
                             tx_timer=8, retries=0)
    assert sorted((a.subnet, a.node) for a in (parse_discovery_response(r.apdu)
                                               for r in completion.responses)) == [
        (1, 1), (1, 2), (1, 3), (1, 4)]


def test_fcm_with_a_wrong_key_is_refused_and_changes_nothing():
    rig = Rig(fleet(1), head_domains=[headend_domain()])
    station = rig.stations[0]
    before = station.config.to_doc()
    with pytest.raises(SecurityError) as refused:
        commission(rig, station, 1, 5, key=b"\x55" * 12)
    assert refused.value.code == 0x0B
    assert station.config.to_doc() == before and station.config.state == UNCONFIGURED
    et04 = _ET04.parse(station.meter.table_bytes(et(4), 0.0))
    assert (et04.subnet_id, et04.node_id) == (0, 0)
    assert keys.usage(station.meter)[0] == 1  # the try counted against the key


def _command_byte_in_clear() -> bool:
    return ClientSession(bytes(12), encrypt=True).request(b"\x41\x00")[0] == 0x41


def test_fcm_keys_in_an_unencrypted_request_are_refused():
    rig = Rig(fleet(1), head_domains=[Domain(APP_DOMAIN, 1, 100), headend_domain()])
    station = rig.stations[0]
    assert commission(rig, station, 1, 1, unicast_key=b"U" * 12,
                      broadcast_key=b"B" * 12) == b"\x03"
    assert station.config.state == UNCONFIGURED
    assert keys.oma_key(station.meter, 0) == oma(station.meter.profile)


@pytest.mark.skipif(not _command_byte_in_clear(),
                    reason="plc/secure.py encrypts the command byte, so the station cannot "
                           "dispatch an encrypted request (needs_services.md 4)")
def test_fcm_keys_travel_encrypted_and_are_installed():
    rig = Rig(fleet(1), head_domains=[Domain(APP_DOMAIN, 1, 100), headend_domain()])
    station = rig.stations[0]
    new_unicast, new_broadcast = b"U" * 12, b"B" * 12
    assert commission(rig, station, 1, 2, unicast_key=new_unicast,
                      broadcast_key=new_broadcast, session={"encrypt": True}) == b"\x00"
    assert keys.oma_key(station.meter, 0) == new_unicast
    assert keys.oma_key(station.meter, 1) == new_broadcast
    assert secured(rig, ClientSession(new_unicast), b"\x30\x00\x01", SubnetNode(1, 2))[0] == 0


def test_fcm_keys_encrypted_below_the_dispatch():
    """The FCM service itself with an RC4-encrypted request (services.handle, as the station
    calls it once the command byte travels in clear)."""
    station = MeterStation(Meter(load_profile()), ManualClock(), rng=random.Random(3))
    services.join_discovery_domain(station.config)
    session = ClientSession(oma(station.meter.profile), encrypt=True)
    personality = Personality(APP_DOMAIN, 1, 2, bytes(6), [], [], b"U" * 12, b"B" * 12)
    ind = Indication(session.request(fcm_request(personality)), Service.REQUEST,
                     SubnetNode(255, 1), NeuronId(station.config.neuron_id), DISCOVERY_DOMAIN,
                     0, False, False, LinkInfo())
    assert session.response(services.handle(station, ind, 0.0)) == b"\x00"
    assert keys.oma_key(station.meter, 0) == b"U" * 12
    assert keys.oma_key(station.meter, 1) == b"B" * 12
    assert station.config.domains[0] == Domain(APP_DOMAIN, 1, 2, bytes(6))


def test_fcm_challenge_refusals_and_the_daily_limit():
    rig = Rig(fleet(1), head_domains=[headend_domain()])
    station = rig.stations[0]
    dst = NeuronId(station.config.neuron_id)
    session = ClientSession(oma(station.meter.profile))
    assert secured(rig, session, fcm_challenge(), dst) == bytes((0, UNCONFIGURED, 0, 0))
    good = fcm_request(Personality(APP_DOMAIN, 1, 9))
    bad_values = bytearray(good)
    bad_values[4 + 3 + 1] = 0  # node 0
    assert secured(rig, session, bytes(bad_values), dst) == b"\x04"
    assert secured(rig, session, good[:-1], dst) == b"\x01"  # truncated
    assert secured(rig, session, b"\x41\x07", dst) == b"\x01"  # unknown kind
    discovery_as_app = fcm_request(Personality(b"\x01", 1, 9))
    discovery_as_app = discovery_as_app[:3] + b"\x03" + DISCOVERY_DOMAIN + discovery_as_app[5:]
    assert secured(rig, session, discovery_as_app, dst) == b"\x04"
    assert station.config.state == UNCONFIGURED
    count = station.meter.state.subsystems["fcm"]["count"]
    for _ in range(services.MAX_FCM_PER_DAY - count):
        rig.ask(b"\x41\x00" + bytes(12), dst)  # garbage: 0x0B, but counted
    assert rig.ask(session.request(fcm_challenge()), dst) == b"\x06"
    assert _ET04.parse(station.meter.table_bytes(et(4), 0.0)).fcm_message_count == 100
    station.clock.advance(86400)  # a new day
    assert secured(rig, session, fcm_challenge(), dst)[0] == 0


# ---------------------------------------------------------------------------------------
# ATM

def test_atm_reports_strength_margin_and_hops_per_carrier():
    rig = Rig(fleet(1))
    rig.channel.connect(0, 1, strength_db=57.3, margin_db=12.5)
    dst = NeuronId(rig.stations[0].config.neuron_id)
    report = parse_atm_response(rig.ask(atm_request(hops=3), dst, retries=3))
    assert report.hops == 3
    assert (report.primary.strength_db, report.primary.margin_db) == (57.3, 12.5)
    assert report.primary.this_carrier and not report.secondary.measured
    # a single try goes on the secondary carrier (the node's last-tries rule): both known now
    report = parse_atm_response(rig.ask(atm_request(), dst, retries=0))
    assert report.secondary.this_carrier and not report.primary.this_carrier
    assert report.secondary.strength_db == 57.3 and report.primary.strength_db == 57.3


def test_atm_without_measurements_reports_not_measured_as_no_loss():
    rig = Rig(fleet(1))  # no link set: a medium that measures nothing, as CN/IP
    answer = rig.ask(atm_request(), NeuronId(rig.stations[0].config.neuron_id))
    assert answer == bytes((0, 0, 0x02, 0x7F, 0xFF, 0x7F, 0xFF, 0x00, 0x7F, 0xFF, 0x7F, 0xFF))


# ---------------------------------------------------------------------------------------
# Discovery through an uncommissioned repeater

def test_discovery_through_an_uncommissioned_repeater():
    profiles = fleet(5)
    profiles[4] = profiles[4].with_overrides(  # one meter behind it is commissioned
        ["identity.subnet=1", "identity.node=4", 'plc.domain="123456"'])
    rig = Rig(profiles)
    repeater, behind = rig.stations[0], rig.stations[1:]
    assert repeater.config.state == UNCONFIGURED and behind[3].config.state == CONFIGURED
    rig.channel.connect(0, 1)  # the head-end hears only the repeater
    for index in range(2, 6):
        rig.channel.connect(1, index, strength_db=50.0 + index, margin_db=9.0)
    first_hop = services.discovery_address(repeater.config.neuron_id)
    request = ltep.proxy_request([first_hop], Broadcast(0),
                                 discovery_request(window_s=1.0, hops=1), tx_timer=13,
                                 retries=1)
    answer = rig.ask(request, NeuronId(repeater.config.neuron_id), tx_timer=15, retries=0,
                     extend_last_s=1.0)
    result = ltep.parse_proxy_response(answer, multi=True)
    assert result.ok and result.total == 4 == len(result.answers)
    found = {parse_discovery_response(apdu).neuron_id: parse_discovery_response(apdu)
             for _, apdu in result.answers}
    assert set(found) == {s.config.neuron_id for s in behind}
    for index, station in enumerate(behind, start=2):
        answer = found[station.config.neuron_id]
        assert answer.hops == 1 and answer.link.strength_db == 50.0 + index
    assert found[behind[3].config.neuron_id].node == 4  # the commissioned one, too


# ---------------------------------------------------------------------------------------
# Malformed input

def test_malformed_requests_get_failure_answers():
    rig = Rig(fleet(1))
    dst = NeuronId(rig.stations[0].config.neuron_id)
    assert rig.ask(b"\x42\x00", dst) == b"\x01"  # ADD too short
    assert rig.ask(b"\x42\x80" + bytes(4), dst) == b"\x01"  # unknown flag
    assert rig.ask(b"\x42\x00\x00\x00\x03\x05", dst) == b"\x01"  # empty slice
    assert rig.ask(b"\x43\x00\x00", dst) == b"\x01"  # ATM too long
    assert rig.ask(b"\x41\x01\x02", dst) == b"\x0b"  # unsealed FCM: no key authenticates it
    completion = rig.request(b"\x42\x00", Broadcast(0), tx_timer=6, retries=0)
    assert completion.responses == ()  # a malformed broadcast is dropped, not answered


def test_arbitrary_bytes_never_raise_nor_change_the_configuration():
    station = MeterStation(Meter(load_profile()), ManualClock(), rng=random.Random(3))
    services.join_discovery_domain(station.config)
    before = station.config.to_doc()
    rng = random.Random(11)
    for _ in range(600):
        apdu = bytes((rng.choice((0x41, 0x42, 0x43)),)) + rng.randbytes(rng.randrange(0, 40))
        for dst in (NeuronId(station.config.neuron_id), Broadcast(0)):
            ind = Indication(apdu, Service.REQUEST, SubnetNode(255, 1), dst, DISCOVERY_DOMAIN,
                             0, False, False, LinkInfo())
            result = station.indicate(station.node, ind, 0.0)
            assert result is None or result is DEFER or isinstance(result, bytes)
    assert station.config.to_doc() == before


def test_more_answers_than_one_ltep_response_holds_are_counted_and_sliced():
    rig = Rig(fleet(8))
    repeater = rig.stations[0]
    rig.channel.connect(0, 1)
    for index in range(2, 9):
        rig.channel.connect(1, index)
    first_hop = services.discovery_address(repeater.config.neuron_id)

    def through_repeater(**selection):
        request = ltep.proxy_request([first_hop], Broadcast(0), discovery_request(
            window_s=1.0, hops=1, **selection), tx_timer=13, retries=1)
        # one try that outwaits the agent's collection (2 x 1536 ms): a retry reaching the
        # repeater after its receive timer would run the discovery again
        answer = rig.ask(request, first_hop, tx_timer=15, retries=0, extend_last_s=1.0)
        return ltep.parse_proxy_response(answer, multi=True)

    everyone = through_repeater()
    assert everyone.total == 7 and len(everyone.answers) == 5  # 5 x 44 bytes fit in 228
    halves = [through_repeater(modulus=2, remainder=r) for r in (0, 1)]
    found = [parse_discovery_response(apdu).neuron_id for h in halves for _, apdu in h.answers]
    assert all(h.total == len(h.answers) for h in halves)
    assert sorted(found) == sorted(s.config.neuron_id for s in rig.stations[1:])
