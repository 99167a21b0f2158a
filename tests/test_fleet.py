"""Fleets: ``profile.fleet_profiles`` numbers meters from one profile, and ``meter-emu run
--count N`` puts all of them behind one CN/IP endpoint."""

from __future__ import annotations

import pytest

import e2e
from e2e import DEFAULT_NEURON_ID, CnipHeadEnd
from meter_emu.profile import ProfileError, fleet_profiles, load_profile

start_emulator = e2e.start_emulator  # the fixture, used by name


def test_fleet_identities_follow_the_documented_rule():
    fleet = fleet_profiles(load_profile(), 12)
    assert [p.meter.id for p in fleet] == [f"meter-{i}" for i in range(1, 13)]
    assert [p.identity.neuron_id for p in fleet][:3] == ["0A0B0C0D0E0F", "0A0B0C0D0E10",
                                                          "0A0B0C0D0E11"]
    assert fleet[11].identity.serial_number == "0000000012345689"  # 12345678 + 11
    assert fleet[11].identity.device_id == "00000000000000000012"
    assert fleet[11].identity.utility_serial_number == "UTIL-0000012"
    for key in ("serial_number", "device_id", "neuron_id", "utility_serial_number"):
        assert len({getattr(p.identity, key) for p in fleet}) == 12, key
    assert {p.oma_key() for p in fleet} == {load_profile().oma_key()}
    assert {p.key("mk") for p in fleet} == {load_profile().key("mk")}
    assert fleet_profiles(load_profile(), 1)[0].data == load_profile().data


def test_fleet_of_a_commissioned_profile_numbers_the_nodes_on():
    profile = load_profile(overrides=["identity.subnet=3", "identity.node=126",
                                      "meter.id=north", 'plc.domain="42"'])
    fleet = fleet_profiles(profile, 4)
    assert [(p.identity.subnet, p.identity.node) for p in fleet] == [(3, 126), (3, 127),
                                                                    (4, 1), (4, 2)]
    assert [p.meter.id for p in fleet] == ["north-1", "north-2", "north-3", "north-4"]


def test_fleet_overflow_and_bad_counts_are_refused():
    with pytest.raises(ProfileError, match="serial_number"):
        fleet_profiles(load_profile(overrides=['identity.serial_number="9999999999999999"']), 2)
    with pytest.raises(ProfileError, match="FFFFFFFFFFFF"):
        fleet_profiles(load_profile(overrides=["identity.neuron_id=FFFFFFFFFFFF"]), 2)
    with pytest.raises(ProfileError, match="at least one"):
        fleet_profiles(load_profile(), 0)
    with pytest.raises(ProfileError, match="plc.domain"):
        load_profile(overrides=['plc.domain="4243"'])


def test_count_20_distinct_meters_on_the_ports(start_emulator, tmp_path):
    """``--count 20``: 20 ids in the ready file, each meter answers on CN/IP by its own Neuron
    ID (NM read memory, read-only-relative offset 0: the Neuron ID, reference section 12.1),
    and the banner says where CN/IP listens and that optical/MEP serve the first meter."""
    emu = start_emulator("--count", "20", cnip="udp://127.0.0.1:0")
    assert emu.ready["meters"] == [f"meter-{i}" for i in range(1, 21)]
    url = emu.ready["ports"]["cnip"]
    assert url.startswith("udp://127.0.0.1:") and not url.endswith(":0")
    banner = emu.stdout()
    assert "20 meters meter-1 .. meter-20" in banner and "optical and MEP serve meter-1" in banner
    assert f"meter-emu client discover --cnip {url}" in banner
    from meter_emu.lon.frame import NeuronId

    head_end = CnipHeadEnd(url)
    try:
        for index in range(20):
            nid = (int.from_bytes(DEFAULT_NEURON_ID, "big") + index).to_bytes(6, "big")
            done = head_end.send(bytes.fromhex("6d01000006"), NeuronId(nid))
            assert done.ok, done.reason
            assert [r.apdu for r in done.responses] == [b"\x2d" + nid]
    finally:
        head_end.close()
