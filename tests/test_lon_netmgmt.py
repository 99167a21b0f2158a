"""What a meter answers on the network (issue 8 item 2): 14908.1 network management and
diagnostics served by a real MeterStation (requests handed to ``station.indicate`` as its node
would), and end to end on the in-memory Channel with a head-end Node. Bytes from
reference/lower-layers.md where it gives them (section 5 codes, 8.4 / 12.1 frames)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter, MeterState
from meter_emu.lon import netmgmt as nm
from meter_emu.lon.channel import Channel
from meter_emu.lon.config import CONFIGURED, UNCONFIGURED, Domain, NodeConfig
from meter_emu.lon.frame import Broadcast, Group, NeuronId, SubnetNode
from meter_emu.lon.node import NO_LINK_INFO, Indication, LinkInfo, Node, Service
from meter_emu.plc.station import MeterStation
from meter_emu.profile import load_profile
from meter_emu.tables.catalog import et

NID = bytes.fromhex("0A0B0C0D0E0F")  # profiles/default.toml identity.neuron_id
PID = bytes.fromhex("9FFFFF0500000001")  # identity.program_id
DOMAIN = b"\x42"
NOW = 10.0


@pytest.fixture
def station():
    return MeterStation(Meter(load_profile()), ManualClock())


def ask(station, apdu: bytes, *, service=Service.REQUEST, dst=None, domain_index=None,
        link=NO_LINK_INFO, authenticated=False):
    """Deliver ``apdu`` to the station as its node does; return what it answers."""
    ind = Indication(apdu=apdu, service=service, source=SubnetNode(1, 1),
                     dst=dst or NeuronId(NID), domain=b"", domain_index=domain_index,
                     priority=False, authenticated=authenticated, link=link)
    return station.indicate(station.node, ind, NOW)


def commission(station, subnet=1, node=9):
    for request in nm.commission(DOMAIN, subnet, node, b"123456",
                                 groups=(nm.group_entry(7, member=3, size=5),)):
        assert ask(station, request) == bytes([nm.success(request[0])]), request.hex()


def et04(meter) -> bytes:
    return meter.table_bytes(et(4), 0.0)


# -- identification ---------------------------------------------------------------------

def test_read_memory_neuron_id_byte_exact(station):
    # section 12.1 (lonifd MsgNeuronID): 6d 01 00 00 06 -> 2d + the 6-byte Neuron ID
    assert ask(station, bytes.fromhex("6d01000006")) == bytes.fromhex("2d") + NID
    assert nm.read_memory(1, 0, 6) == bytes.fromhex("6d01000006")
    # the program ID sits at read-only offset 13, the firmware version at absolute 0
    assert ask(station, nm.read_memory(1, 13, 8)) == b"\x2d" + PID
    assert ask(station, nm.read_memory(0, 0, 1)) == bytes([0x2D, nm.FIRMWARE_VERSION])


def test_query_id_selectors_and_memory_match(station):
    answer = bytes([0x21]) + NID + PID
    assert ask(station, nm.query_id()) == answer
    assert nm.parse_query_id(answer) == (NID, PID)
    assert ask(station, nm.query_id(nm.SEL_SELECTED)) is None  # not selected: silent
    assert ask(station, nm.respond_to_query(True)) == b"\x22"
    assert ask(station, nm.query_id(nm.SEL_SELECTED_UNCONFIGURED)) == answer
    # memory match: only the node whose Neuron ID starts 0A 0B answers
    assert ask(station, nm.query_id(mode=nm.READ_ONLY, offset=0, match=NID[:2])) == answer
    assert ask(station, nm.query_id(mode=nm.READ_ONLY, offset=0, match=b"\x0a\x0c")) is None
    commission(station)
    assert ask(station, nm.query_id()) is None  # configured: the unconfigured query is silent
    assert ask(station, nm.query_id(nm.SEL_SELECTED)) == answer
    assert ask(station, nm.query_id(7)) == b"\x01"  # unknown selector: failure


def test_wink_and_send_id_info(station):
    assert ask(station, nm.wink()) == b"\x30"
    assert ask(station, nm.wink(), service=Service.UNACKD) is None
    assert nm.volatile(station).winks == 2
    assert ask(station, bytes([0x70, 1, 0])) == b"\x30\x00" + NID + PID
    assert ask(station, bytes([0x70, 4])) == b"\x10"


# -- commissioning ----------------------------------------------------------------------

def test_commissioning_persists_and_shows_in_et04(station):
    meter = station.meter
    assert (et04(meter)[10], et04(meter)[11], et04(meter)[72]) == (0, 0, 2)
    commission(station)
    config = station.config
    assert config.state == CONFIGURED and config.configured
    assert config.domains[0] == Domain(DOMAIN, 1, 9, b"123456")
    assert [(m.group, m.member, m.size) for m in config.groups] == [(7, 3, 5)]
    # ET04.10 subnet, .11 node, .72 Neuron State (MEP guide: 4 = configured, online)
    assert (et04(meter)[10], et04(meter)[11], et04(meter)[72]) == (1, 9, 4)
    assert meter.dirty
    # a restart: the meter rebuilt from its saved state is still commissioned
    state = MeterState.from_doc(json.loads(json.dumps(meter.state.to_doc())))
    again = MeterStation(Meter(load_profile(), state=state), ManualClock())
    assert again.config.domains == config.domains and again.config.state == CONFIGURED
    assert again.config.groups == config.groups
    assert ask(again, nm.query_address(0)) == bytes.fromhex("27 85 03 03 8a 07")
    assert et04(again.meter)[10:12] == b"\x01\x09"
    assert nm.volatile(again).reset_cause == nm.RESET_POWER_UP


def test_query_domain_hides_the_key(station):
    commission(station)
    answer = ask(station, nm.query_domain(0))
    # 2A, id(6) subnet nonclone|node idlen key(6, zeros: the key never leaves the meter)
    assert answer == bytes.fromhex("2a 420000000000 01 89 01 000000000000")
    domain = nm.parse_domain(answer)
    assert (domain.id, domain.subnet, domain.node) == (DOMAIN, 1, 9)
    assert ask(station, bytes([0x60, 8, 0])) == bytes.fromhex("20 08 420000000000 01 89 01")
    assert ask(station, bytes([0x60, 9])) == b"\x00\x09"  # report key: refused


def test_update_key_and_oma_key(station):
    commission(station)
    assert ask(station, nm.update_key(0, b"\x01\x01\x01\x01\x01\xff")) == b"\x25"
    assert station.config.domains[0].key == b"234565"
    oma = bytes(range(1, 13))
    assert ask(station, nm.update_oma_key(oma)) == b"\x20\x0a"
    assert station.config.domains[0].key == oma
    assert ask(station, nm.update_oma_key(b"\x01" * 12, increment=True)) == b"\x20\x0a"
    assert station.config.domains[0].key == bytes(range(2, 14))
    saved = station.meter.state.subsystems["lon"]["config"]["domains"][0]["key"]
    assert saved == bytes(range(2, 14)).hex()
    # Update Domain with the OMA auth type replaces the first half of the 12-byte key
    assert ask(station, nm.update_domain(0, DOMAIN, 1, 9, b"abcdef", oma=True)) == b"\x23"
    assert station.config.domains[0].key == b"abcdef" + bytes(range(8, 14))
    assert ask(station, nm.query_domain(0))[9] == 0x08 | 1  # auth type 1 (OMA), length 1


def test_leave_domain_unconfigures(station):
    commission(station)
    assert ask(station, nm.leave_domain(0), domain_index=None) == b"\x24"
    config = station.config
    assert config.state == UNCONFIGURED and not nm.application_domains(config)
    assert not config.groups
    assert (et04(station.meter)[10], et04(station.meter)[72]) == (0, 2)
    assert ask(station, nm.query_address(0)) == b"\x27" + bytes(5)
    commission(station)
    # received in the domain it leaves: it acts, and nobody is left to answer
    assert ask(station, nm.leave_domain(0), domain_index=0) is None
    assert not nm.application_domains(station.config)


def test_address_table(station):
    commission(station)
    entry = nm.group_entry(9, member=1, size=3, receive_timer=4, transmit_timer=6, retries=2)
    assert ask(station, nm.update_address(4, entry)) == b"\x26"
    parsed = nm.parse_address(ask(station, nm.query_address(4)))
    assert (parsed.kind, parsed.group, parsed.member, parsed.size) == ("group", 9, 1, 3)
    assert (parsed.receive_timer, parsed.transmit_timer, parsed.retries) == (4, 6, 2)
    assert {m.group for m in station.config.groups} == {7, 9}
    # a subnet/node entry is stored; unassigning a group entry leaves the group
    assert ask(station, nm.update_address(5, bytes([1, 0x05, 0x23, 0x0A, 2]))) == b"\x26"
    assert nm.parse_address(ask(station, nm.query_address(5))).kind == "subnet_node"
    assert ask(station, nm.update_address(4, nm.UNASSIGNED)) == b"\x26"
    assert {m.group for m in station.config.groups} == {7}
    # a membership the FCM adds shows in the first free slot
    from meter_emu.lon.config import Membership
    station.config.groups.append(Membership(group=33, member=2))
    assert nm.parse_address(ask(station, nm.query_address(1))).group == 33


def test_update_group_address_must_come_by_group(station):
    commission(station)
    entry = nm.group_entry(7, member=0, size=12, receive_timer=10)
    assert ask(station, nm.update_group_address(entry), dst=Group(7), domain_index=0) == b"\x29"
    member = station.config.groups[0]
    assert (member.size, member.member, member.receive_timer) == (12, 3, 10)
    assert ask(station, nm.update_group_address(entry), domain_index=0) == b"\x09"
    assert ask(station, nm.update_group_address(entry), dst=Group(8), domain_index=0) == b"\x09"


def test_acknowledged_requests_act_without_answer(station):
    request = nm.update_domain(0, DOMAIN, 3, 4)
    assert ask(station, request, service=Service.ACKD) is None
    assert station.config.domains[0].subnet == 3


# -- node mode --------------------------------------------------------------------------

def test_set_node_mode_offline_online_reset(station):
    commission(station)
    assert ask(station, nm.set_node_mode(nm.MODE_OFFLINE)) == b"\x2c"
    status = nm.parse_status(ask(station, nm.query_status()))
    assert status.node_state == nm.STATE_SOFT_OFFLINE == et04(station.meter)[72]
    assert ask(station, nm.set_node_mode(nm.MODE_ONLINE)) == b"\x2c"
    assert et04(station.meter)[72] == 4
    assert ask(station, nm.set_node_mode(nm.MODE_CHANGE_STATE, 6)) == b"\x2c"
    assert nm.parse_status(ask(station, nm.query_status())).node_state == 6
    assert ask(station, nm.set_node_mode(nm.MODE_RESET)) == b"\x2c"
    assert nm.parse_status(ask(station, nm.query_status())).reset_cause == nm.RESET_SOFTWARE


# -- status and transceiver -------------------------------------------------------------

def test_query_status_counters_move_and_clear(station):
    answer = ask(station, nm.query_status())
    # 31, five 16-bit counters, reset cause 01 power-up, state 02, version, error log, model
    assert answer == bytes.fromhex("31" + "00" * 10 + "01 02") + bytes(
        [nm.FIRMWARE_VERSION, 0, nm.MODEL])
    frame = bytearray(bytes.fromhex("0030018203 51c108".replace(" ", "")))  # section 12.1
    frame[-1] ^= 0xFF  # a CRC error on the line
    assert station.node.receive(bytes(frame), NOW) == []
    assert nm.parse_status(ask(station, nm.query_status())).transmission_errors == 1
    stats = ask(station, nm.read_memory(nm.STATISTICS, 0, 20))
    assert stats[1:3] == b"\x00\x01"
    assert ask(station, nm.clear_status()) == b"\x33"
    status = nm.parse_status(ask(station, nm.query_status()))
    assert (status.transmission_errors, status.reset_cause) == (0, nm.RESET_CLEARED)
    assert ask(station, bytes([0x56]))[0] == 0x36  # flex-domain query status


def test_transceiver_status_mapping(station):
    # CN/IP measures nothing: the public "perfect" set (section 8.4, 12.1)
    assert ask(station, nm.query_xcvr_status()) == bytes.fromhex("34 040004ffff0000")
    measured = LinkInfo(strength_db=63.4, margin_db=20.2)
    answer = ask(station, nm.query_xcvr_status(), link=measured)
    assert answer == bytes.fromhex("34 04 00 04 3f 00 14 00")
    status = nm.parse_xcvr_status(answer)
    assert (status.secondary, status.strength_db, status.margin_db) == (False, 63, 20)
    secondary = LinkInfo(strength_db=300.0, margin_db=-3.0, alt_path=True)
    answer = ask(station, nm.query_xcvr_status(bidirectional=True), link=secondary)
    assert answer == bytes.fromhex("37 04 00 0c 00 fe 00 00")
    assert nm.parse_xcvr_status(answer, bidirectional=True).strength_db == 254
    assert nm.parse_xcvr_status(ask(station, nm.query_xcvr_status())).strength_db is None


def test_nd_proxy_target_and_refused_forwarding(station):
    assert ask(station, b"\x52\x00") == b"\x32" + NID + PID  # query unconfigured
    assert ask(station, b"\x52\x01")[0] == 0x32 and len(ask(station, b"\x52\x01")) == 16
    assert ask(station, b"\x52\x02") == bytes.fromhex("32 040004ffff0000")
    assert ask(station, b"\x52\x01\x01\x02\x03\x04\x05\x06") == b"\x12"
    commission(station)
    assert ask(station, b"\x52\x00") is None  # configured: silent


# -- memory writes and NM authentication ------------------------------------------------

def test_write_memory_only_where_safe(station):
    config_head = ask(station, nm.read_memory(nm.CONFIG, 8, 11))
    assert config_head == bytes.fromhex("2d 055e003fa6776700080e01")  # PL-20N, section 12.1
    assert ask(station, nm.write_memory(nm.CONFIG, 2, b"LOC001")) == b"\x2e"
    assert ask(station, nm.read_memory(nm.CONFIG, 2, 6)) == b"\x2dLOC001"
    assert ask(station, nm.write_memory(nm.CONFIG, 24, b"\xa0")) == b"\x2e"
    assert station.config.non_group_receive_timer == 10
    assert ask(station, nm.write_memory(nm.READ_ONLY, 0, b"\x00")) == b"\x0e"
    assert ask(station, nm.write_memory(nm.CONFIG, 25, b"\x00")) == b"\x0e"  # domain table
    assert ask(station, nm.read_memory(nm.READ_ONLY, 0, 6))[1:] == NID  # untouched


def test_nm_authentication_bit(station):
    commission(station)
    assert ask(station, nm.write_memory(nm.CONFIG, 24, bytes([0x80 | nm.NM_AUTH]))) == b"\x2e"
    assert ask(station, nm.update_domain(0, DOMAIN, 5, 5)) == b"\x03"
    assert station.config.domains[0].subnet == 1
    assert ask(station, nm.query_status())[0] == 0x31  # never needs authentication
    assert ask(station, nm.update_domain(0, DOMAIN, 5, 5), authenticated=True) == b"\x23"


# -- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("request_hex, answer_hex", [
    ("5100", "11"),  # query status takes no data
    ("6d0100", "0d"),  # read memory too short
    ("6d01002f10", "0d"),  # past the read-only image
    ("6d00000006", "0d"),  # absolute memory beyond byte 0
    ("630042", "03"),  # update domain too short
    ("6300" + "420000000000" + "00" + "89" + "01" + "00" * 6, "03"),  # subnet 0
    ("6302" + "420000000000" + "01" + "89" + "01" + "00" * 6, "03"),  # domain index 2
    ("6402", "04"),  # leave domain index 2
    ("6a02", "0a"),  # no such domain to query
    ("660f" + "8000000007", "06"),  # address index 15
    ("6600" + "8080000007", "06"),  # group in a domain (1) the meter lacks
    ("6c0303", "0c"),  # applicationless state
    ("6c09", "0c"),  # unknown mode
    ("6205", "02"),  # respond-to-query flag
    ("5a", "1a"),  # unknown ND
    ("74", "14"),  # router command
    ("6073", "0073"),  # unknown expanded sub-command echoes it
])
def test_failures(station, request_hex, answer_hex):
    before = station.config.to_doc()
    assert ask(station, bytes.fromhex(request_hex)) == bytes.fromhex(answer_hex)
    assert station.config.to_doc() == before


def test_configured_state_needs_a_domain(station):
    while station.config.domains:  # a meter may start in the OSGP discovery domain
        assert ask(station, nm.leave_domain(0)) == b"\x24"
    assert ask(station, nm.set_node_mode(nm.MODE_CHANGE_STATE, 4)) == b"\x0c"
    assert station.config.state == UNCONFIGURED


@settings(max_examples=300, deadline=None)
@given(st.integers(0x50, 0x7F), st.binary(max_size=24), st.sampled_from(list(Service)[:4]))
def test_arbitrary_requests_never_raise_or_corrupt(code, data, service):
    station = MeterStation(Meter(load_profile()), ManualClock())
    commission(station)
    answer = ask(station, bytes([code]) + data, service=service, domain_index=0)
    assert answer is None or (isinstance(answer, bytes) and 1 <= len(answer) <= 95)
    if answer and service == Service.REQUEST:
        assert answer[0] in (nm.success(code), nm.failure(code))
    config = station.config
    assert NodeConfig.from_doc(json.loads(json.dumps(config.to_doc()))) is not None
    assert all(len(d.id) in (0, 1, 3, 6) and 1 <= d.node <= 127 for d in config.domains)
    assert len(nm.address_table(station)) == nm.ADDRESS_SLOTS


def test_response_parsers_reject_failures():
    with pytest.raises(nm.NmError):
        nm.parse_status(b"\x11")
    with pytest.raises(nm.NmError):
        nm.parse_query_id(b"\x31" + bytes(14))  # a status answer, not a query ID
    with pytest.raises(nm.NmError):
        nm.response_data(nm.query_version(), b"\x20\x02")


# -- end to end on the channel ----------------------------------------------------------

class HeadEnd:
    """A head-end application: collects indications and completions."""

    def __init__(self):
        self.indications, self.completions = [], {}

    def indicate(self, node, ind, now):
        self.indications.append(ind)

    def completed(self, node, completion, now):
        self.completions[completion.handle] = completion


def test_end_to_end_discover_commission_query():
    channel = Channel(latency=0.01)
    meter_station = MeterStation(Meter(load_profile()), ManualClock())
    app = HeadEnd()
    head_end = Node(NodeConfig(neuron_id=bytes(6), domains=[Domain(DOMAIN, 1, 1)],
                               state=CONFIGURED), app, name="head-end")
    meter_index, head_index = channel.attach_station(meter_station), channel.attach(head_end)
    channel.connect(meter_index, head_index, strength_db=71.0, margin_db=18.0)
    frames = []
    channel.taps.append(lambda frame, sender, now: frames.append((sender, frame)))

    def request(apdu, dst, domain_index):
        handle = head_end.send(apdu, dst, channel.now, domain_index=domain_index)
        assert channel.run_until(lambda: handle in app.completions, 30.0)
        completion = app.completions[handle]
        assert completion.responses, completion.reason
        return completion.responses[0].apdu

    # discovery: an unconfigured-node query broadcast in the flex domain
    assert nm.parse_query_id(request(nm.query_id(), Broadcast(0), None)) == (NID, PID)
    # commissioning by Neuron ID in the flex domain
    for apdu in nm.commission(DOMAIN, 1, 9):
        assert request(apdu, NeuronId(NID), None) == bytes([nm.success(apdu[0])])
    # now reachable by subnet/node in its domain
    status = nm.parse_status(request(nm.query_status(), SubnetNode(1, 9), 0))
    assert status.node_state == nm.STATE_CONFIGURED
    xcvr = nm.parse_xcvr_status(request(nm.query_xcvr_status(), SubnetNode(1, 9), 0))
    assert (xcvr.strength_db, xcvr.margin_db) == (71, 18)
    # the service pin message: 7F NID PID, broadcast unacknowledged in the flex domain, which
    # an unconfigured node hears (a tool's listening interface)
    listener = HeadEnd()
    listening = channel.attach(Node(NodeConfig(neuron_id=b"\x01" * 6), listener, name="nni"))
    channel.connect(meter_index, listening)
    nm.service_pin(meter_station, channel.now)
    assert channel.run_until(lambda: bool(listener.indications), 5)
    pin = listener.indications[0]
    assert nm.parse_service_pin(pin.apdu) == (NID, PID)
    assert pin.dst == Broadcast(0) and pin.domain == b"" and pin.service == Service.UNACKD
    sent = [frame for sender, frame in frames if sender == meter_index][-1]
    # section 12.2 frame 4 shape: NPDU 30 (APDU, broadcast, no domain), source 0/0, subnet 0
    assert sent[1:5] == bytes.fromhex("30008000") and sent[5:-2] == b"\x7f" + NID + PID
