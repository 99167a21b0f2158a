"""``meter-emu run --cnip`` end to end: a head-end node over real UDP (cnip/client.py) talks to
a real emulator process; tshark decodes the emulator's ``--pcap`` as our stack does; a write
acknowledged over CN/IP survives ``kill -9``."""

from __future__ import annotations

import pytest

import e2e
from e2e import DEFAULT_NEURON_ID, ET03, OMA_KEY, CnipHeadEnd, partial_read, partial_write
from meter_emu.lon.frame import Broadcast, NeuronId
from meter_emu.lon.node import Service
from meter_emu.plc.secure import ClientSession
from tshark_decode import our_frames, tshark_available, tshark_frames

start_emulator = e2e.start_emulator  # the fixture, used by name
BT01 = 1  # General Manufacturer Identification: serial number at offset 16 (8 bytes BCD)


def _nid(index: int) -> NeuronId:
    return NeuronId((int.from_bytes(DEFAULT_NEURON_ID, "big") + index).to_bytes(6, "big"))


@pytest.mark.skipif(not tshark_available(), reason="tshark is not installed")
def test_tshark_decodes_the_emulators_pcap_frame_by_frame(start_emulator, tmp_path):
    pcap = tmp_path / "x.pcap"
    emu = start_emulator("--count", "3", "--pcap", str(pcap), cnip="udp://127.0.0.1:0")
    head_end = CnipHeadEnd(emu.ready["ports"]["cnip"])
    try:
        # NM read memory by Neuron ID (reference section 12.1: 2D + the Neuron ID)
        done = head_end.send(bytes.fromhex("6d01000006"), _nid(1))
        assert done.responses[0].apdu == b"\x2d" + _nid(1).nid
        # a secured OSGP partial read (OMA digest, RC4 mode): BT01's serial number
        session = ClientSession(OMA_KEY, mode="rc4")
        plain = head_end.secured(session, partial_read(BT01, 16, 8), _nid(2))
        assert plain == b"\x00\x00\x08" + bytes.fromhex("0000000012345680")  # meter-3's
        # an ACKD (wink) and a broadcast request every meter answers
        assert head_end.send(b"\x70", _nid(0), service=Service.ACKD).ok
        done = head_end.send(bytes.fromhex("6d01000006"), Broadcast(0), expected=3)
        assert sorted(r.apdu for r in done.responses) == [b"\x2d" + _nid(i).nid
                                                          for i in range(3)]
        head_end.driver.run(0.3)  # late duplicates, if any, land in the pcap too
        sent, received = head_end.driver.stats["sent"], head_end.driver.stats["received"]
    finally:
        head_end.close()
    emu.stop()
    theirs, ours = tshark_frames(pcap), our_frames(pcap)
    assert len(theirs) == len(ours) == sent + received
    for number, (a, b) in enumerate(zip(theirs, ours), 1):
        assert a == b, f"frame {number}"
    kinds = {(f["pdu_format"], f["address_format"], f["apdu_code"]) for f in theirs}
    assert (1, 3, 0x3F) in kinds  # the secured read, SPDU by Neuron ID
    assert (0, 3, 0x70) in kinds  # the ACKD wink
    assert (1, 0, 0x6D) in kinds  # the broadcast
    assert any(f["pdu_format"] == 0 and f["pdu_header"] >> 4 == 2 for f in theirs)  # its ACK


def test_a_write_acknowledged_over_cnip_survives_kill_9(start_emulator, tmp_path):
    state = tmp_path / "state"
    emu = start_emulator("--count", "2", cnip="udp://127.0.0.1:0", state=state)
    session = ClientSession(OMA_KEY, mode="rc4")
    head_end = CnipHeadEnd(emu.ready["ports"]["cnip"])
    try:
        plain = head_end.secured(session, partial_write(ET03, 0, b"UTIL-VIA-CNIP"), _nid(1))
        assert plain == b"\x00"
    finally:
        head_end.close()
    emu.kill9()  # right after the acknowledgement: no signal handler, no final save
    emu = start_emulator("--count", "2", cnip="udp://127.0.0.1:0", state=state)
    head_end = CnipHeadEnd(emu.ready["ports"]["cnip"])
    try:
        plain = head_end.secured(session, partial_read(ET03, 0, 13), _nid(1))
        assert plain == b"\x00\x00\x0d" + b"UTIL-VIA-CNIP"
        other = head_end.secured(ClientSession(OMA_KEY, mode="rc4"), partial_read(ET03, 0, 12),
                                 _nid(0))
        assert other[3:] == b"UTIL-0000001"  # the other meter kept its own
    finally:
        head_end.close()


def test_default_port_taken_falls_back_with_a_warning(start_emulator):
    import socket

    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 1628))
    except OSError:  # someone else holds it: the fallback is exercised all the same
        pass
    try:
        emu = start_emulator(cnip="udp://127.0.0.1:1628")
        assert emu.ready["ports"]["cnip"] != "udp://127.0.0.1:1628"
        assert "CN/IP takes a free port" in emu.stderr()
        head_end = CnipHeadEnd(emu.ready["ports"]["cnip"])
        try:  # and the meter answers there
            done = head_end.send(bytes.fromhex("6d01000006"), _nid(0))
            assert done.responses[0].apdu == b"\x2d" + DEFAULT_NEURON_ID
        finally:
            head_end.close()
    finally:
        holder.close()


def test_bad_cnip_options_are_refused_before_start():
    from e2e import run_meter_emu

    done = run_meter_emu("run", "--cnip", "off", "--pcap", "x.pcap", "--optical", "off",
                         "--mep", "off", "--mqtt", "off")
    assert done.returncode == 2 and "--pcap records the CN/IP channel" in done.stderr
    done = run_meter_emu("run", "--cnip", "tcp://127.0.0.1:0", "--optical", "off", "--mep",
                         "off", "--mqtt", "off")
    assert done.returncode == 2 and "use udp://HOST:PORT" in done.stderr
    done = run_meter_emu("run", "--count", "0", "--cnip", "off", "--optical", "off", "--mep",
                         "off", "--mqtt", "off")
    assert done.returncode == 2 and "at least one meter" in done.stderr


@pytest.mark.parametrize("phy", ["ideal", "bpsk"])
def test_the_service_pin_trigger_broadcasts_the_meters_service_pin_message(start_emulator, phy):
    """MQTT ``<prefix>/<meter>/trigger/service_pin`` presses the meter's service pin: a
    listening interface on CN/IP (an unconfigured node, as commissioning tools listen) hears
    the 14908.1 service pin message with that meter's Neuron ID and the profile's program ID."""
    from meter_emu.client.plc import HeadEnd
    from meter_emu.lon import netmgmt
    from meter_emu.lon.config import NodeConfig
    from meter_emu.profile import fleet_profiles, load_profile

    emu = start_emulator("--count", "3", "--phy", phy, cnip="udp://127.0.0.1:0",
                         mqtt="embedded:0")
    fleet = fleet_profiles(load_profile(), 3)
    tool = HeadEnd.over_cnip(emu.ready["ports"]["cnip"],
                             NodeConfig(neuron_id=bytes.fromhex("FE00000000AA")))
    try:  # a first request: the endpoint learns where the tool is
        done = tool.transact(netmgmt.query_status(), _nid(0), timeout=5.0, domain_index=None)
        assert done is not None and done.ok
        pins = lambda i: i.apdu[:1] == bytes([netmgmt.SERVICE_PIN])  # noqa: E731
        assert tool.listen(0.3, pins) == []  # nobody pressed anything
        e2e.mosquitto_pub(emu.ready["ports"]["mqtt"], "meter-emu/meter-2/trigger/service_pin",
                          "1")
        heard = tool.listen(3.0, pins)
        assert len(heard) == 1
        assert heard[0].service is Service.UNACKD and heard[0].dst == Broadcast(0)
        nid, program = netmgmt.parse_service_pin(heard[0].apdu)
        assert nid == bytes.fromhex(fleet[1].identity.neuron_id)
        assert program == bytes.fromhex(fleet[1].identity.program_id)
    finally:
        tool.close()
