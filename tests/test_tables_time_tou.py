"""Time and TOU tables (BT50, BT51, BT53, BT54) and the control-output tables (ET05, ET23, ET30,
ET46, ET47, ET61) through the optical port, against the MEP guide's layouts and ranges."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import MK, PK, RK, LinkClient

from meter_emu.clock import ManualClock
from meter_emu.device.meter import Meter, MeterState
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG

BT50, BT51, BT53, BT54, BT55 = 50, 51, 53, 54, 55
ET05, ET23, ET30, ET46, ET47, ET61 = (2048 + n for n in (5, 23, 30, 46, 47, 61))
TABLES = (BT50, BT51, BT53, BT54, ET05, ET23, ET30, ET46, ET47, ET61)
STORED_PENDING = (BT53, BT54, ET05, ET30, ET47, ET61)

OK, ERR, ISC, IAR = b"\x00", b"\x01", b"\x03", b"\x05"

# BT54 offsets with BT50's dimensions: 25 non-recurring and 23 recurring dates, 200 tier
# switches (3 bytes each), then the seasons (5 bytes each) and the Calendar ID.
RECURRING_AT, SWITCHES_AT, SEASONS_AT = 75, 144, 744


def meter_on(firmware: str) -> Meter:
    return Meter(load_profile(overrides=[f"identity.firmware_version={firmware}"]))


def client_for(meter: Meter, key: bytes = MK) -> LinkClient:
    client = LinkClient(optical_protocol(meter, ManualClock()))
    client.logon(key)
    return client


def tier_switch(tier: int, hour: int, minute: int, schedule: int = 0) -> bytes:
    return (tier | minute << 5 | hour << 11).to_bytes(2, "little") + bytes([schedule])


def ansi_date(year: int, month: int, day: int) -> bytes:
    return (year - 2000 | month << 7 | day << 11).to_bytes(2, "little")


def rdate(month: int, day: int, weekday: int = 0, offset: int = 0) -> bytes:
    return (month | offset << 4 | weekday << 8 | day << 11).to_bytes(2, "little")


@pytest.mark.parametrize("number", TABLES, ids=lambda n: CATALOG[n].label)
def test_full_and_partial_reads_match_the_layout(meter, client, clock, number):
    client.logon(MK)
    layout = CATALOG[number].layout_for(meter)
    whole = client.read(number)
    assert len(whole) == layout.sizeof()
    assert whole == meter.table_bytes(number, clock.now())
    layout.parse(whole)
    offset, count = len(whole) // 3, max(1, len(whole) // 2)
    assert client.read(number, offset, count) == whole[offset:offset + count]


def test_stored_tables_are_pending_capable_and_the_others_live():
    for number in TABLES:
        table = CATALOG[number]
        assert table.pending == (number in STORED_PENDING), table.label
        assert table.stored == (number in STORED_PENDING), table.label


# ---- BT50 / BT51 --------------------------------------------------------------------


@pytest.mark.parametrize("firmware, seasons, size", [("3.10.21", 4, 768), ("3.50.01", 12, 808),
                                                     ("4.30.01", 12, 808)])
def test_bt50_values_and_calendar_size_equal_bt54(firmware, seasons, size):
    meter = meter_on(firmware)
    client = client_for(meter, RK)
    bt50 = client.read(BT50)
    # MEP p.222-224: TOU/season self-reads; sort tier switches, time zone offset; 2 special
    # schedules; 25 non-recurring, 23 recurring dates; 200 tier switches; BT54 size
    assert bt50[:2] == bytes([0x03, 0x18])
    assert bt50[2] == seasons | 2 << 4
    assert bt50[3:7] == bytes([25, 23, 200, 0])
    assert int.from_bytes(bt50[7:9], "little") == size == len(client.read(BT54))
    assert client.read(BT51) == bt50


def test_bt50_matches_the_guides_808_byte_calendar_on_firmware_350_and_later():
    bt50 = meter_on("3.50.01").table_bytes(BT50, 0)
    assert bt50 == bytes.fromhex("03182C1917C8002803")  # MEP p.222-224, "808" at offset 7


def test_bt50_and_bt51_are_read_only(client):
    client.logon(MK)
    assert client.write(BT50, bytes(9)) == IAR
    assert client.write(BT51, bytes(9)) == IAR


# ---- BT53 and the local clock -------------------------------------------------------


def test_bt53_defaults_to_the_profile_time_zone(meter, client):
    client.logon(RK)
    # MEP p.225: DST time 00:00:00, DST adjustment 0, time zone offset INT16 minutes at 4
    assert client.read(BT53) == bytes([0, 0, 0, 0]) + (60).to_bytes(2, "little", signed=True)


def test_bt53_time_zone_moves_the_local_clock(meter, client, clock):
    client.logon(PK)
    assert client.write(BT53, (-300).to_bytes(2, "little", signed=True), 4) == OK
    assert client.read(BT53)[4:] == (-300).to_bytes(2, "little", signed=True)
    utc = meter.utc(clock.now())
    assert meter.local(clock.now()) == utc - dt.timedelta(hours=5)
    bt55 = client.read(BT55)
    assert bt55[:6] == bytes([25, 12, 31, 19, 0, 0])  # 2026-01-01 00:00 UTC - 5 h


def test_bt53_dst_fields_read_back(client):
    client.logon(MK)
    assert client.write(BT53, bytes([2, 0, 0, 60, 120, 0])) == OK
    assert client.read(BT53) == bytes([2, 0, 0, 60, 120, 0])


@pytest.mark.parametrize("minutes", [-12 * 60 - 1, 14 * 60 + 1, 32767])
def test_bt53_refuses_offsets_outside_minus_12_plus_14_hours(meter, client, clock, minutes):
    client.logon(MK)
    before = client.read(BT53)
    assert client.write(BT53, minutes.to_bytes(2, "little", signed=True), 4) == ERR
    assert client.read(BT53) == before
    assert meter.local(clock.now()) - meter.utc(clock.now()) == dt.timedelta(hours=1)


def test_bt53_accepts_the_range_ends(client):
    client.logon(MK)
    for minutes in (-12 * 60, 14 * 60):
        assert client.write(BT53, minutes.to_bytes(2, "little", signed=True), 4) == OK


def test_bt53_refuses_an_impossible_dst_time_and_the_rk(client):
    client.logon(MK)
    before = client.read(BT53)
    assert client.write(BT53, bytes([24, 0, 0])) == ERR
    assert client.read(BT53) == before
    client.logon(RK)
    assert client.write(BT53, bytes([1, 0, 0])) == ISC


# ---- BT54 ----------------------------------------------------------------------------


def test_bt54_default_is_an_empty_calendar_in_the_firmwares_tou_format():
    old, new = meter_on("3.10.21").table_bytes(BT54, 0), meter_on("3.50.01").table_bytes(BT54, 0)
    # MEP p.227: bit 7 of the first recurring date's action = 12-season format (firmware 3.50+)
    assert old == bytes(768)
    assert new[RECURRING_AT + 2] == 0x80
    assert new[:RECURRING_AT + 2] == bytes(RECURRING_AT + 2)
    assert new[RECURRING_AT + 3:] == bytes(808 - RECURRING_AT - 3)


def _tou_calendar(meter: Meter, calendar_id: int) -> bytearray:
    """Two day schedules (tier 1 from 07:00, tier 0 from 23:00; tier 0 all day), DST on the
    last Sunday of March, season 1 from April 1 and a 25 December special day."""
    image = bytearray(meter.table_bytes(BT54, 0))
    image[0:3] = ansi_date(2026, 12, 25) + bytes([19])  # special schedule 0
    image[RECURRING_AT:RECURRING_AT + 3] = rdate(3, 25, weekday=0, offset=2) + bytes([0x80 | 1])
    image[RECURRING_AT + 3:RECURRING_AT + 6] = rdate(4, 1) + bytes([4 | 1 << 6])  # season 1, self read
    image[SWITCHES_AT:SWITCHES_AT + 6] = tier_switch(0, 0, 0) + tier_switch(1, 7, 0)
    image[SWITCHES_AT + 6:SWITCHES_AT + 9] = tier_switch(0, 23, 0)
    image[SEASONS_AT:SEASONS_AT + 5] = bytes([1, 1, 0, 1, 1])
    image[-4:] = calendar_id.to_bytes(4, "little")
    return image


def test_bt54_calendar_write_reads_back_and_sets_et23_active_calendar_id():
    meter = meter_on("3.50.01")
    client = client_for(meter, PK)
    calendar = _tou_calendar(meter, 0x12345678)
    assert client.write(BT54, bytes(calendar)) == OK
    assert client.read(BT54) == calendar
    assert client.read(ET23)[95:99] == (0x12345678).to_bytes(4, "little")  # MEP p.98-99


def test_bt54_partial_write_of_one_tier_switch(meter, client):
    client.logon(MK)
    assert client.write(BT54, tier_switch(3, 17, 30, 1), SWITCHES_AT + 30) == OK
    assert client.read(BT54, SWITCHES_AT + 30, 3) == tier_switch(3, 17, 30, 1)


def test_bt54_stores_tier_switch_filler_bits_as_zero(meter, client):
    client.logon(MK)
    raw = (1 | 0b11 << 3 | 8 << 11).to_bytes(2, "little") + b"\x00"
    assert client.write(BT54, raw, SWITCHES_AT) == OK
    assert client.read(BT54, SWITCHES_AT, 3) == tier_switch(1, 8, 0)


def _refused(client, data: bytes, offset: int, table: int = BT54) -> None:
    before = client.read(table)
    assert client.write(table, data, offset) == ERR
    assert client.read(table) == before


@pytest.mark.parametrize("data, offset", [
    (tier_switch(4, 6, 0), SWITCHES_AT),  # BT21 has tiers 0..3
    (tier_switch(1, 24, 0), SWITCHES_AT + 3),
    (tier_switch(1, 6, 60), SWITCHES_AT + 3),
    (bytes([20]), SEASONS_AT + 2),  # 200 switches / 10 = day schedules 0..19
    (rdate(4, 1) + bytes([7]), RECURRING_AT + 3),  # season 4 in the 4-season format
    (rdate(4, 1) + bytes([21]), RECURRING_AT + 3),  # special schedules are 19 and 20
    (rdate(4, 1) + bytes([15]), RECURRING_AT + 3),  # unassigned action code
    (rdate(2, 30) + bytes([3]), RECURRING_AT + 3),  # no 30 February
    (rdate(0, 1) + bytes([3]), RECURRING_AT + 3),  # unassigned date with an action
    (rdate(14, 0, weekday=7) + bytes([3]), RECURRING_AT + 3),  # weekly needs a weekday
    (bytes([0x80]), RECURRING_AT + 2),  # 12-season format before firmware 3.50
    (ansi_date(2026, 5, 1) + bytes([3]), 0),  # non-recurring dates need the new format
])
def test_bt54_refuses_invalid_calendars_on_firmware_310(client, data, offset):
    client.logon(MK)
    _refused(client, data, offset)


@pytest.mark.parametrize("data, offset", [
    (rdate(4, 1) + bytes([14]), RECURRING_AT + 3),  # season 11 is fine ...
    (ansi_date(2026, 5, 1) + bytes([3]), 0),  # ... and so are non-recurring dates
    (rdate(13, 1) + bytes([1 << 6]), RECURRING_AT + 3),  # monthly self read
    (rdate(15, 0) + bytes([1 << 6]), RECURRING_AT + 3),  # period/delta
])
def test_bt54_new_format_accepts_12_seasons_and_dates(data, offset):
    client = client_for(meter_on("3.50.01"))
    assert client.write(BT54, data, offset) == OK
    assert client.read(BT54, offset, len(data)) == data


@pytest.mark.parametrize("data, offset", [
    (rdate(4, 1) + bytes([0x80 | 15]), RECURRING_AT),  # season 12 does not exist
    (ansi_date(2026, 2, 29) + bytes([3]), 0),  # 2026 is no leap year
    (ansi_date(2026, 5, 1) + bytes([22]), 0),
])
def test_bt54_new_format_refusals(data, offset):
    _refused(client_for(meter_on("3.50.01")), data, offset)


def test_bt54_write_needs_a_configuration_key(client):
    client.logon(RK)
    assert client.write(BT54, tier_switch(1, 6, 0), SWITCHES_AT) == ISC


# ---- ET05 ----------------------------------------------------------------------------


def test_et05_write_reads_back(client):
    client.logon(MK)
    data = ((6000).to_bytes(4, "little") + bytes(4)
            + b"".join(r.to_bytes(4, "little") for r in (1000, 1200, 800, 1_000_000))
            + bytes([1, 0b111]) + (500).to_bytes(4, "little") + (2000).to_bytes(4, "little")
            + (300).to_bytes(2, "little"))  # designed: warning, emergency credit, window
    assert client.write(ET05, data) == OK
    assert client.read(ET05) == data


def test_an_et05_saved_before_the_designed_bytes_keeps_its_settings():
    """Old state files hold a 26-byte ET05: it is padded, not dropped (no configuration
    error)."""
    old = (6000).to_bytes(4, "little") + bytes(20) + bytes([1, 1])
    meter = Meter(load_profile(), MeterState(tables={ET05: old}), now=0.0)
    assert meter.table_bytes(ET05, 0.0) == old + bytes(10)
    assert "configuration_error" not in meter.state.alarms


@pytest.mark.parametrize("data, offset", [
    ((1_000_001).to_bytes(4, "little"), 8),  # prepay rate above 1,000,000 Wh/kWh
    (bytes([4]), 24),  # relay calendar modes are 0..3
    (bytes([0x10]), 24),  # no second control relay before firmware 4.30
])
def test_et05_refusals(client, data, offset):
    client.logon(MK)
    _refused(client, data, offset, ET05)


def test_et05_second_relay_mode_on_firmware_430_and_key_check():
    client = client_for(meter_on("4.30.01"))
    assert client.write(ET05, bytes([0x31]), 24) == OK
    assert client.read(ET05, 24, 1) == bytes([0x31])
    client.logon(RK)
    assert client.write(ET05, bytes([0]), 24) == ISC


# ---- ET23 ----------------------------------------------------------------------------


@pytest.mark.parametrize("firmware, size", [("3.10.21", 186), ("4.00.01", 218)])
def test_et23_size_follows_firmware_and_shows_a_fresh_meter(firmware, size):
    et23 = client_for(meter_on(firmware), RK).read(ET23)
    assert len(et23) == size  # MEP p.98-99: reserved to 185 (3.X) or 217 (4.0+)
    assert et23 == bytes(size)  # no messages, contactor closed (94), calendar ID 0 (95)


def test_et23_fields_stay_meter_controlled(meter, client):
    client.logon(MK)
    before = client.read(ET23)
    assert client.write(ET23, bytes([9, 9, 9, 9]), 95) == OK
    assert client.read(ET23) == before
    client.logon(PK)
    assert client.write(ET23, bytes([1]), 0) == ISC


# ---- ET30 ----------------------------------------------------------------------------


def test_et30_write_reads_back_and_keeps_its_status(client):
    client.logon(PK)
    assert client.read(ET30) == bytes(6) + bytes([10, 0, 0])  # 10 s lockout by default
    data = (40_000).to_bytes(4, "little") + (30).to_bytes(2, "little") \
        + (60).to_bytes(2, "little") + bytes([3])
    assert client.write(ET30, data) == OK
    assert client.read(ET30) == data[:8] + bytes([0])  # exceeded flags are the meter's


def test_et30_refuses_a_short_lockout_and_the_mep_like_rk(client):
    client.logon(MK)
    _refused(client, (9).to_bytes(2, "little"), 6, ET30)
    client.logon(RK)
    assert client.write(ET30, bytes(4)) == ISC


# ---- ET46 ----------------------------------------------------------------------------


@pytest.mark.parametrize("firmware, size", [("3.10.21", 13), ("3.70.01", 23)])
def test_et46_size_follows_firmware_and_is_read_only(firmware, size):
    client = client_for(meter_on(firmware))
    et46 = client.read(ET46)
    assert len(et46) == size  # MEP p.121-122: prepay credit and open time from 3.70
    assert et46 == bytes(size)  # power measurements, never opened
    assert client.write(ET46, bytes(1)) == IAR


# ---- ET47 ----------------------------------------------------------------------------


def test_et47_default_cancels_and_a_write_reads_back(client):
    client.logon(MK)
    assert client.read(ET47) == bytes([255]) + bytes(15)  # MEP p.122: Tariff 255
    data = bytes([2, 3]) + (3600).to_bytes(4, "little") + bytes([26, 6, 1, 12, 0, 0]) \
        + (77).to_bytes(4, "little")
    assert client.write(ET47, data) == OK
    assert client.read(ET47) == data


@pytest.mark.parametrize("data, offset", [
    (bytes([4]), 0),  # BT21 has 4 tiers (0..3); 255 cancels
    (bytes([1, 4]), 0),  # cancellation types are 0..3
    (bytes([26, 13, 1, 0, 0, 0]), 6),  # no month 13
])
def test_et47_refusals(client, data, offset):
    client.logon(MK)
    _refused(client, data, offset, ET47)


def test_et47_needs_a_configuration_key(client):
    client.logon(RK)
    assert client.write(ET47, bytes([1])) == ISC


# ---- ET61 ----------------------------------------------------------------------------


@pytest.mark.parametrize("firmware, relays", [("3.10.21", 1), ("4.30.01", 2)])
def test_et61_has_80_switches_per_control_relay(firmware, relays):
    et61 = client_for(meter_on(firmware)).read(ET61)
    assert len(et61) == 2 * 80 * relays  # ET11.26 = 80 (MEP p.79), a 2nd relay from 4.30


def test_et61_switch_write_reads_back_with_filler_cleared(client):
    client.logon(MK)
    closed_at_0630 = 1 | 30 << 5 | 6 << 11
    assert client.write(ET61, (closed_at_0630 | 0b11110).to_bytes(2, "little"), 2) == OK
    assert client.read(ET61, 0, 4) == bytes(2) + closed_at_0630.to_bytes(2, "little")


@pytest.mark.parametrize("value", [24 << 11, 60 << 5])
def test_et61_refuses_times_that_do_not_exist(client, value):
    client.logon(MK)
    _refused(client, value.to_bytes(2, "little"), 10, ET61)
    client.logon(RK)
    assert client.write(ET61, bytes(2)) == ISC
