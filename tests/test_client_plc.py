"""The head-end client (client/plc.py) against real MeterStations on the in-memory 14908.1
channel: every request goes through the real node, the real OSGP security and the real meter
model; the assertions compare with what the meter itself holds (``meter.table_bytes``)."""

from __future__ import annotations

import random

import pytest

from meter_emu.client.plc import (HeadEnd, MeterRef, NoAnswer, PlcClient, PlcError,
                                  head_end_config, meter_ref)
from meter_emu.clock import ManualClock
from meter_emu.device import firmware as device_firmware
from meter_emu.device.meter import Meter
from meter_emu.lon.channel import Channel
from meter_emu.metering import recorder
from meter_emu.lon.frame import SubnetNode
from meter_emu.plc.station import MeterStation
from meter_emu.profile import fleet_profiles, load_profile
from meter_emu.tables.system import broadcast_groups

ET03, ET04, ET17 = 2048 + 3, 2048 + 4, 2048 + 17
EP27 = 2048 + 27
OMA_KEY = b"OMA-emu-dflt"  # profiles/default.toml keys.oma


class Rig:
    """``count`` meters (the fleet rule of profile.fleet_profiles) and a head-end on one
    channel."""

    def __init__(self, count: int = 1, overrides: tuple[str, ...] = (), key: bytes = OMA_KEY,
                 timeout: float = 30.0):
        self.clock = ManualClock()
        self.channel = Channel(rng=random.Random(7))
        profile = load_profile("default", list(overrides))
        self.stations = []
        self.links: list[int] = []
        for index, meter_profile in enumerate(fleet_profiles(profile, count)):
            meter = Meter(meter_profile, now=self.clock.now())
            station = MeterStation(meter, self.clock, rng=random.Random(index))
            self.links.append(self.channel.attach_station(station))
            self.stations.append(station)
        self.head_end = HeadEnd.on_channel(self.channel, head_end_config(),
                                           rng=random.Random(99), timeout=timeout)
        self.client = PlcClient(self.head_end, key, rng=random.Random(5))

    @property
    def meters(self) -> list[Meter]:
        return [s.meter for s in self.stations]

    def ref(self, index: int) -> MeterRef:
        return meter_ref(self.meters[index].profile.identity.neuron_id)


def test_whole_table_reads_full_and_in_parts_equal_the_meter():
    rig = Rig()
    meter, ref = rig.meters[0], rig.ref(0)
    now = rig.clock.now()
    assert rig.client.read_table(ref, 1) == meter.table_bytes(1, now)  # 24 bytes: one full read
    assert rig.client.read_table(ref, ET03) == meter.table_bytes(ET03, now)  # 143: two parts
    assert rig.client.read_table(ref, ET03, 80, 40) == meter.table_bytes(ET03, now)[80:120]
    # every read used up one sequence number: the meter's ET04.0 is the client's next one
    session = rig.client.session(ref)
    assert int.from_bytes(meter.table_bytes(ET04, now)[:4], "little") == session.sequence


def test_a_meter_ahead_in_sequence_is_followed_after_its_0x0c():
    rig = Rig(overrides=("plc.sequence_number=5000",))
    ref = rig.ref(0)
    assert rig.client.read_table(ref, 1) == rig.meters[0].table_bytes(1, rig.clock.now())
    assert rig.client.session(ref).sequence == 5001


def test_wrong_key_fails_with_0x0b_naming_meter_and_request():
    rig = Rig(key=b"not-the-key!")
    with pytest.raises(PlcError) as caught:
        rig.client.read_table(rig.ref(0), 1)
    assert caught.value.code == 0x0B
    text = str(caught.value)
    assert "0A0B0C0D0E0F" in text and "0x0B digest error" in text and "BT01" in text


def test_write_whole_table_in_75_byte_parts_and_partial():
    rig = Rig()
    meter, ref = rig.meters[0], rig.ref(0)
    image = bytearray(meter.table_bytes(ET03, rig.clock.now()))
    image[0:30] = b"UTIL-CLIENT-WRITE".ljust(30, b"\0")
    image[140:143] = b"xyz"  # past the first 75-byte part
    rig.client.write_table(ref, ET03, bytes(image), offset=0)
    after = meter.table_bytes(ET03, rig.clock.now())
    assert after[:30] == image[:30] and after[140:143] == b"xyz"
    rig.client.write_table(ref, ET03, b"AB", offset=5)
    assert meter.table_bytes(ET03, rig.clock.now())[:12] == b"UTIL-ABIENT-"


def test_procedure_runs_and_checks_bt08():
    rig = Rig()
    meter, ref = rig.meters[0], rig.ref(0)
    result, data = rig.client.run_procedure(ref, EP27, bytes([1]) + (0x0101).to_bytes(2, "little"))
    assert (result, data[:1]) == (0, b"\x01")
    assert broadcast_groups(meter) == [0x0101]
    result, _ = rig.client.run_procedure(ref, EP27, bytes([0]) + (0x0101).to_bytes(2, "little"))
    assert result == 0 and broadcast_groups(meter) == []


def test_load_profile_recipe_reads_the_valid_blocks():
    rig = Rig()
    meter, ref = rig.meters[0], rig.ref(0)
    start = rig.clock.now()
    for k in range(3 * 96 + 4):  # three whole days and an hour of 15-minute intervals
        meter.state.registers["fwd_active_wh"] = 1000 + 10 * k
        recorder.run_due(meter, start + 900 * k)
    rig.clock.advance(900 * (3 * 96 + 3))
    lp = rig.client.read_load_profile(ref)
    now = rig.clock.now()
    assert lp.geometry.channels == 4 and lp.geometry.intervals == 96
    assert len(lp.blocks) == lp.status["number_of_valid_blocks"] >= 3
    bt64 = meter.table_bytes(64, now)
    size = lp.geometry.block_size
    last = lp.status["last_block"]
    expect = b"".join(bt64[(b % lp.geometry.blocks) * size:][:size]
                      for b in range(last - len(lp.blocks) + 1, last + 1))
    assert lp.raw == expect
    values = [i.channel_values[0] for b in lp.blocks for i in b.intervals]
    assert max(values) > 1000  # the recorded energy, not an empty block


def _join_group(rig: Rig, index: int, group: int) -> None:
    result, _ = rig.client.run_procedure(rig.ref(index), EP27,
                                         bytes([1]) + group.to_bytes(2, "little"))
    assert result == 0


def test_firmware_to_a_group_by_broadcast_with_fill_in_and_switch():
    rig = Rig(count=4)
    group = 0x0201
    for index in range(3):
        _join_group(rig, index, group)
    image = device_firmware.build_image(bytes.fromhex("9FFFFF0500000002"), "3.11.00",
                                        bytes(range(256)) * 3)
    members = [rig.ref(i) for i in range(3)]
    report = rig.client.broadcast_firmware(group, image, members, switch=True)
    packets = -(-len(image) // device_firmware.PACKET_SIZE)
    for index, ref in enumerate(members):
        entry = report[str(ref)]
        assert entry["broadcast"] == packets  # a lossless channel: all came by broadcast
        assert entry["version"] == "3.11.00"
        assert rig.meters[index].table_bytes(1, rig.clock.now())[14:16] == \
            device_firmware.packed_version("3.11.00").to_bytes(2, "big")
    outsider = rig.meters[3]
    assert device_firmware.received(outsider) == []
    assert outsider.table_bytes(1, rig.clock.now())[14:16] == \
        device_firmware.packed_version("3.10.21").to_bytes(2, "big")


def test_broadcast_fill_in_sends_what_a_meter_missed():
    rig = Rig(count=2)
    group = 0x0301
    he, (near, far) = rig.head_end.link, rig.links
    rig.channel.connect(he, near)
    rig.channel.connect(he, far)
    for index in range(2):
        _join_group(rig, index, group)
    image = device_firmware.build_image(bytes.fromhex("9FFFFF0500000003"), "3.12.00",
                                        bytes(500))
    members = [rig.ref(0), rig.ref(1)]
    count = rig.client.prepare_firmware(image, members)
    first = rig.client.open_window(members, count)
    rig.channel.disconnect(he, far)  # the far meter misses the whole broadcast
    rig.client.broadcast_packets(group, image, first)
    assert device_firmware.received(rig.meters[1]) == []
    assert device_firmware.received(rig.meters[0]) == list(range(count))
    rig.channel.connect(he, far)
    report = rig.client.fill_in_firmware(image, members, switch=True)
    near_entry = report[str(members[0])]
    assert (near_entry["broadcast"], near_entry["filled_in"]) == (count, 0)
    assert near_entry["version"] == "3.12.00"
    assert report[str(members[1])]["broadcast"] == 0
    assert report[str(members[1])]["filled_in"] == count
    assert report[str(members[1])]["version"] == "3.12.00"


def test_discover_then_commission_then_read_by_subnet_node():
    rig = Rig(count=5)
    found = rig.client.discover(duration=10.0)
    nids = {m.neuron_id for m in found}
    assert nids == {bytes.fromhex(m.profile.identity.neuron_id) for m in rig.meters}
    target = found[2]
    ref = rig.client.commission(target, subnet=7, node=3)
    station = next(s for s in rig.stations if s.config.neuron_id == target.neuron_id)
    assert station.config.configured
    assert (station.config.domains[0].subnet, station.config.domains[0].node) == (7, 3)
    assert ref.dst == SubnetNode(7, 3)
    assert rig.client.read_table(ref, 1) == station.meter.table_bytes(1, rig.clock.now())


def test_read_through_a_chain_of_repeaters():
    rig = Rig(count=4, overrides=("identity.subnet=1", "identity.node=1"), timeout=60.0)
    he, links = rig.head_end.link, rig.links
    # head-end - 1/1 - 1/2 - 1/3 - 1/4 (target): only neighbours hear each other
    rig.channel.connect(he, links[0])
    for a, b in zip(links, links[1:]):
        rig.channel.connect(a, b)
    target = meter_ref("1/4").via("1/1", "1/2", "1/3")
    assert rig.client.read_table(target, 1) == rig.meters[3].table_bytes(1, rig.clock.now())
    assert rig.client.read_table(target, ET03) == rig.meters[3].table_bytes(ET03,
                                                                            rig.clock.now())
    rig.client.timeout = 10.0
    with pytest.raises(NoAnswer):
        rig.client.read_table(meter_ref("1/4"), 1)  # not heard directly
    rig.channel.disconnect(links[2], links[3])
    with pytest.raises(NoAnswer, match="LTEP failure"):
        rig.client.read_table(target, 1)


def test_status_and_wink_answer():
    rig = Rig()
    status = rig.client.status(rig.ref(0))
    assert status.node_state == 2  # unconfigured (a default-profile meter)
    rig.client.wink(rig.ref(0))
