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


# ---- fleets at scale: slices, shared sections, one ET42 rendering, lazy engines ------------


def test_a_slice_of_the_fleet_has_the_whole_fleets_identities():
    whole = fleet_profiles(load_profile(), 30)
    part = fleet_profiles(load_profile(), 30, range(10, 20))
    assert [p.meter.id for p in part] == [f"meter-{i}" for i in range(11, 21)]
    assert [p.data["identity"] for p in part] == [p.data["identity"] for p in whole[10:20]]
    # the last meter's numbers are checked even when it is in another slice
    with pytest.raises(ProfileError, match="serial_number"):
        fleet_profiles(load_profile(overrides=['identity.serial_number="9999999999999990"']),
                       20, range(0, 5))


def test_fleet_meters_share_the_profiles_sections_but_not_their_identity():
    fleet = fleet_profiles(load_profile(), 3)
    assert fleet[1].data["keys"] is fleet[2].data["keys"]
    assert fleet[1].data["dimensions"] is fleet[2].data["dimensions"]
    assert fleet[1].data["identity"] is not fleet[2].data["identity"]
    assert fleet[1].data["meter"] is not fleet[2].data["meter"]
    assert fleet[1].template is fleet[2].template is not None


def test_fresh_fleet_meters_record_the_et42_they_render():
    """ET42 is rendered once per fleet: the digest each fresh meter records must be the one it
    would render itself (it would not be if ET42 depended on a meter's identity)."""
    from meter_emu.device.meter import Meter

    fleet = fleet_profiles(load_profile(overrides=["identity.firmware_version=3.70.01"]), 40)
    meters = [Meter(p, None, 1_767_225_600.0) for p in (fleet[0], fleet[17], fleet[39])]
    assert fleet[0].template["interface_digest"] == meters[0].state.interface_digest
    for meter in meters:
        assert meter.state.interface_digest == meter.interface_digest()


@pytest.mark.parametrize("overrides", [[], ["identity.subnet=3", "identity.node=120"]])
def test_fleet_meters_et04_is_the_one_they_would_build(overrides):
    """ET04 is built once per fleet and patched with each meter's Neuron ID, subnet and node:
    the image must be what a meter's own build gives (it would not be if another ET04 field
    followed the identity)."""
    from meter_emu.device.meter import Meter
    from meter_emu.tables import et
    from meter_emu.tables.extended import _ET04, _et04_values

    fleet = fleet_profiles(load_profile(overrides=overrides), 300)
    for index in (0, 1, 7, 299):
        meter = Meter(fleet[index], None, 1_767_225_600.0)
        assert meter.table_bytes(et(4), 0.0) == _ET04.build(_et04_values(meter))
    assert "et04" in fleet[0].template


def test_fleet_meters_share_power_quality_limits_until_one_is_configured_apart():
    """Thresholds are derived once per fleet, also after each meter's first PLC request
    stored its ET04 (another sequence number, Neuron ID and address); a meter whose ET04
    rated voltage was written gets its own, from its own table."""
    from meter_emu.device.meter import Meter
    from meter_emu.metering import power_quality
    from meter_emu.tables import et

    fleet = fleet_profiles(load_profile(), 3)
    meters = [Meter(p, None, 1_767_225_600.0) for p in fleet]
    for n, meter in enumerate(meters):
        image = meter.table_bytes(et(4), 0.0)
        meter.state.tables[et(4)] = (1000 + n).to_bytes(4, "little") + image[4:]
    limits = [power_quality._watch(meter).limits for meter in meters]
    assert limits[0] is limits[1] is limits[2]
    image = bytearray(meters[2].state.tables[et(4)])
    image[60:62] = (120).to_bytes(2, "little")  # ET04 rated voltage (offset 60): 120 V
    meters[2].state.tables[et(4)] = bytes(image)
    own = power_quality._watch(meters[2]).limits
    assert own is not limits[0]
    assert own.voltage[power_quality.SAG][0] < limits[0].voltage[power_quality.SAG][0]
    assert power_quality._watch(meters[0]).limits is limits[0]


def test_consecutive_neuron_ids_get_distinct_discovery_addresses():
    from meter_emu.plc.services import DISCOVERY_SLOTS, discovery_address

    first = int.from_bytes(DEFAULT_NEURON_ID, "big")
    addresses = {discovery_address((first + i).to_bytes(6, "big")) for i in range(10_000)}
    assert len(addresses) == 10_000
    assert all(1 <= a.subnet <= 254 and 1 <= a.node <= 127 for a in addresses)
    assert discovery_address((first + DISCOVERY_SLOTS).to_bytes(6, "big")) == \
        discovery_address(first.to_bytes(6, "big"))


def _bt23_forward_wh(meter, now: float) -> int:
    from meter_emu.device.access import Key

    return int.from_bytes(meter.read_table(1 * 23, Key.MK, now)[:4], "little", signed=True)


def test_an_engine_started_late_counts_energy_from_the_meters_start():
    """Fleet meters start their engines lazily (fleet/timed.py); a first advance an hour late
    still meters the hour: 230 V x 10 A x 1 h = 2300 Wh."""
    from meter_emu.device.meter import Meter

    start = 1_767_225_600.0
    profile = load_profile(overrides=["quantities.initial={voltage = 230, current = 10}"])
    late, early = Meter(profile, None, start), Meter(profile, None, start)
    early.advance(start)
    assert _bt23_forward_wh(late, start + 3600) == _bt23_forward_wh(early, start + 3600) == 2300


def test_timed_actions_wake_only_the_meters_that_are_due():
    import asyncio

    from meter_emu.clock import ManualClock
    from meter_emu.device.meter import Meter
    from meter_emu.fleet.timed import TimedActions
    from meter_emu.metering import engine

    clock = ManualClock()
    saved = []
    timed = TimedActions(clock, lambda: saved.append(clock.now()))
    meters = [Meter(p, None, clock.now()) for p in fleet_profiles(load_profile(), 3)]

    def engine_last(meter):
        return meter.state.subsystems[engine.STATE]["last"]

    async def scenario():
        for meter in meters:
            timed.schedule(meter, at=clock.now())
        assert timed.due() == 3
        assert timed.run_due() is False  # all three started
        assert all(engine_last(m) == clock.now() for m in meters)
        deadline = min(m.next_deadline() for m in meters)  # the load profile interval's end
        assert timed.due() == 3 and deadline > clock.now()
        clock.advance(deadline - clock.now() - 1)
        timed.run_due()
        assert all(engine_last(m) == 1_767_225_600.0 for m in meters)  # none was due yet
        clock.advance(1)
        timed.run_due()
        assert all(engine_last(m) == deadline for m in meters)
        assert all(m.next_deadline() > deadline for m in meters)

    asyncio.run(scenario())


def test_the_fleet_is_frozen_for_the_gc_once_its_meters_have_started():
    """run() freezes the heap (gc.freeze) once the start's first advances are through, so
    full collections no longer walk the meters' state; not before (their engines' state
    would stay behind, young)."""
    import asyncio
    import gc

    from meter_emu.clock import ManualClock
    from meter_emu.device.meter import Meter
    from meter_emu.fleet.timed import TimedActions
    from meter_emu.runner import freeze_when_started

    clock = ManualClock()
    timed = TimedActions(clock, lambda: None)
    meters = [Meter(p, None, clock.now()) for p in fleet_profiles(load_profile(), 300)]

    async def scenario():
        for meter in meters:
            timed.schedule(meter, at=clock.now())
        gc.unfreeze()
        freezer = asyncio.create_task(freeze_when_started(timed))
        runner = asyncio.create_task(timed.run())
        await asyncio.sleep(0)
        assert not freezer.done() and gc.get_freeze_count() == 0
        await asyncio.wait_for(freezer, 30)
        assert timed.due() == 300 and timed.caught_up.is_set()  # every meter started
        assert gc.get_freeze_count() > 300 * 50  # their state, among the rest
        runner.cancel()

    try:
        asyncio.run(scenario())
    finally:
        gc.unfreeze()


def test_ramped_start_with_progress_and_statistics(start_emulator):
    """``--ramp 1 --count 1000``: the meters come up over a second (progress lines on stderr,
    not a terminal), all answer, and the statistics line at the stop counts the requests."""
    emu = start_emulator("--count", "1000", "--ramp", "1", cnip="udp://127.0.0.1:0")
    assert len(emu.ready["meters"]) == 1000
    assert "meter-emu: starting [" in emu.stderr() and "1000/1000 meters" in emu.stderr()
    from meter_emu.lon.frame import NeuronId

    head_end = CnipHeadEnd(emu.ready["ports"]["cnip"])
    try:
        for index in (0, 999):
            nid = (int.from_bytes(DEFAULT_NEURON_ID, "big") + index).to_bytes(6, "big")
            assert head_end.send(bytes.fromhex("6d01000006"), NeuronId(nid)).ok
    finally:
        head_end.close()
    emu.stop()
    assert "meter-emu: 1000 meters; requests" in emu.stdout()


def test_a_restart_rechecks_et42_when_the_profile_changed():
    """A restarted meter skips rendering ET42 when its profile is the one it was checked with,
    and still sees a change of firmware (ET42's required sections, MEP p.110)."""
    from meter_emu.device.meter import Meter, MeterState

    start = 1_767_225_600.0
    saved = Meter(fleet_profiles(load_profile(), 3)[2], None, start).state.to_doc()
    assert saved["interface_profile"] and saved["interface_digest"]
    same = Meter(fleet_profiles(load_profile(), 3)[2], MeterState.from_doc(saved), start)
    assert same.system_info().idt_version == 0 and not same.state.alarms
    newer = fleet_profiles(load_profile(overrides=["identity.firmware_version=3.70.01"]), 3)[2]
    upgraded = Meter(newer, MeterState.from_doc(saved), start)
    assert upgraded.system_info().idt_version == 1
    assert "dimension_change" in upgraded.state.alarms
