"""The switches acting on their own: prepay credit, maximum power trips, the ET61 calendar, the
push button, switch failures, and what they show (event 66 arguments in the history log, BT03,
ET30, ET46, ET54, the MQTT state). Everything goes through the optical port (procedures, table
writes) with the injected load, on a manual clock."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import MK, Procedures

from meter_emu.device import relay
from meter_emu.device.meter import Meter, MeterState
from meter_emu.metering import quantities, triggers
from meter_emu.mqtt.topics import state_document
from meter_emu.profile import load_profile

EP02, EP07, EP21, EP22, EP23, EP30, EP36 = (2048 + n for n in (2, 7, 21, 22, 23, 30, 36))
ET05, ET30, ET46, ET54, ET61 = (2048 + n for n in (5, 30, 46, 54, 61))
CONTACTOR, OPEN, CLOSE, ARM = 0, 0, 1, 2
COMPLETED = 0
E_CONDITION, E_PREPAYMENT, E_SCHEDULE, E_RELAY_OPEN = 51, 52, 50, 67
E_SWITCH, E_BUTTON, E_WARNING, E_EXHAUSTED = 66, 106, 103, 84
LOAD_2300W = {"voltage": 230, "current": 10, "pf": 1}
HOUR = 3600.0


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def events(meter, *numbers: int) -> list[tuple[int, int]]:
    return [(e[3], e[4]) for e in meter.state.history.entries if e[3] in numbers]


def stamped(meter, number: int) -> list[int]:
    """The meter UTC seconds of each history entry of event ``number``."""
    return [e[0] for e in meter.state.history.entries if e[3] == number]


def argument(previous: int, new: int, reason: int, failed: bool = False) -> int:
    """Event 66 written out: state code, failure bit 4, bits 6/7 previously closed, reason."""
    return new | failed << 4 | (0xC0 if previous == 1 else 0) | reason << 8


def bt03_bit(client, offset: int, bit: int) -> bool:
    return bool(client.read(3)[offset] >> bit & 1)


def fwd_wh(meter) -> int:
    return meter.state.registers["fwd_active_wh"]


@pytest.fixture
def meter():
    """Firmware 4.30: ET46 has its prepay and open time fields (3.70+), ET61 two relays."""
    return Meter(load_profile(overrides=["identity.firmware_version=4.30.01"]))


@pytest.fixture
def proc(client):
    client.logon(MK)
    return Procedures(client)


def et05(client, *, primary=0, secondary=0, rates=(0, 0, 0, 0), modes=0, options=0,
         warning=0, emergency=0, window=0):
    data = (u32(primary) + u32(secondary) + b"".join(u32(r) for r in rates)
            + bytes([modes, options]) + u32(warning) + u32(emergency)
            + window.to_bytes(2, "little"))
    assert client.write(ET05, data) == b"\x00"


def et30(client, *, current_ma=0, exceed_s=0, lockout_s=10):
    data = u32(current_ma) + exceed_s.to_bytes(2, "little") + lockout_s.to_bytes(2, "little")
    assert client.write(ET30, data) == b"\x00"


# ---- the push button ---------------------------------------------------------------------


def test_button_closes_only_an_armed_contactor_and_always_logs_106(proc, client, meter, clock):
    assert proc(EP23, bytes([ARM]))[0] == COMPLETED
    triggers.fire(meter, "button", "on", clock.now() + 5)  # inside the 10 s lockout: stays open
    assert relay.disconnect_state(meter) == relay.ARMED
    clock.advance(10)
    triggers.fire(meter, "button", "on", clock.now())
    assert relay.disconnect_state(meter) == relay.CONNECTED
    assert events(meter, E_SWITCH, E_BUTTON)[-3:] == [
        (E_BUTTON, 0), (E_BUTTON, 0), (E_SWITCH, argument(2, 1, relay.Reason.MANUAL))]
    for action in (OPEN, 3):  # plainly open, locked open: the button does nothing
        clock.advance(10)
        assert proc(EP02, bytes([CONTACTOR, action, 0, 0]))[0] == COMPLETED
        triggers.fire(meter, "button", "on", clock.now() + 20)
        assert relay.disconnect_state(meter) != relay.CONNECTED
        assert events(meter, E_SWITCH, E_BUTTON)[-1] == (E_BUTTON, 0)


# ---- timed actions meter the energy with the contactor as it was ------------------------------


def test_energy_before_a_scheduled_lock_open_is_metered_and_none_after(proc, meter, clock):
    start = clock.now()
    quantities.apply(meter, LOAD_2300W, start)
    at = dt.datetime.fromtimestamp(start + 1800, dt.timezone.utc)
    ltime = bytes([at.year - 2000, at.month, at.day, at.hour, at.minute, at.second])
    assert proc(EP36, ltime)[0] == COMPLETED
    meter.advance(start + HOUR)  # one call over the lock-open instant
    assert fwd_wh(meter) == 1150  # 2300 W for exactly half an hour
    assert stamped(meter, E_SWITCH) == [int(start) + 1800]


# ---- prepay -----------------------------------------------------------------------------------


def test_credit_runs_out_at_the_right_energy_and_instant(proc, client, meter, clock):
    start = clock.now()
    et05(client, warning=300)
    assert proc(EP21, bytes([0]) + u32(1000)) == (COMPLETED, u32(1000) + bytes(8))
    quantities.apply(meter, LOAD_2300W, start)
    meter.advance(start + HOUR)
    assert fwd_wh(meter) == 1000  # the contactor opened when the credit was spent, to the Wh
    assert relay.credit(meter) == 0
    # 700 Wh at 2300 W = 1095.65 s: the warning; 1000 Wh = 1565.22 s: the end
    assert stamped(meter, E_WARNING) == [int(start + 700 * HOUR / 2300)]
    assert stamped(meter, E_EXHAUSTED) == [int(start + 1000 * HOUR / 2300)]
    assert events(meter, E_SWITCH, E_PREPAYMENT, E_EXHAUSTED) == [
        (E_EXHAUSTED, 0), (E_SWITCH, argument(1, 2, relay.Reason.PREPAY)),
        (E_PREPAYMENT, 0x0002)]
    assert bt03_bit(client, 6, 4)  # Prepay Credit Exhausted
    assert client.read(2048 + 23)[94] == 2  # ET23: opened


def test_emergency_credit_and_tier_rates_and_credit_added_back(proc, client, meter, clock):
    start = clock.now()
    et05(client, rates=(2000, 0, 0, 0), emergency=200)  # tier 1 costs double
    assert client.read(ET46)[13:17] == u32(200)  # ET46.13: the negative credit allowed
    assert proc(EP21, bytes([0]) + u32(1000))[0] == COMPLETED
    quantities.apply(meter, LOAD_2300W, start)
    meter.advance(start + HOUR)
    assert fwd_wh(meter) == 600  # 1200 Wh of credit at 2 Wh per Wh
    assert relay.credit(meter) == -200
    clock.advance(HOUR)
    assert proc(EP21, bytes([0]) + u32(500)) == (COMPLETED, u32(300) + bytes(8))
    assert not bt03_bit(client, 6, 4)
    assert relay.disconnect_state(meter) == relay.ARMED  # restored for the customer to close
    assert events(meter, E_SWITCH, E_PREPAYMENT)[-2:] == [
        (E_SWITCH, argument(2, 2, relay.Reason.PREPAY_POWER)), (E_PREPAYMENT, 0x0002)]
    triggers.fire(meter, "button", "on", clock.now())
    assert relay.disconnect_state(meter) == relay.CONNECTED


def test_no_prepay_without_credit_or_with_the_feature_off(proc, client, meter, clock):
    start = clock.now()
    quantities.apply(meter, LOAD_2300W, start)
    meter.advance(start + HOUR)
    assert relay.disconnect_state(meter) == relay.CONNECTED  # never given credit: no prepay
    assert proc(EP07, bytes([0, 0]))[0] == COMPLETED  # feature 0 prepay off
    assert proc(EP21, bytes([0]) + u32(10))[0] == COMPLETED
    meter.advance(start + 2 * HOUR)
    assert relay.disconnect_state(meter) == relay.CONNECTED and relay.credit(meter) == 10


# ---- maximum power -------------------------------------------------------------------------


def test_sustained_load_above_the_level_trips_after_the_exceed_time(proc, client, meter, clock):
    start = clock.now()
    et05(client, primary=2000, secondary=5000, options=1)
    et30(client, exceed_s=60, lockout_s=30)
    quantities.apply(meter, LOAD_2300W, start)
    meter.advance(start + 59)
    assert relay.disconnect_state(meter) == relay.CONNECTED
    meter.advance(start + 600)
    assert stamped(meter, E_SWITCH) == [int(start) + 60]
    assert fwd_wh(meter) == round(2300 * 60 / HOUR)  # 38.3 Wh: nothing after the trip
    assert events(meter, E_SWITCH, E_CONDITION) == [
        (E_SWITCH, argument(1, 2, relay.Reason.MAX_POWER)), (E_CONDITION, 0x0002)]
    assert client.read(ET30)[8] & 1  # ET30 status: power level exceeded
    assert client.read(ET46)[17:23] == bytes([26, 1, 1, 0, 1, 0])  # opened 2026-01-01 00:01
    assert relay.disconnect_state(meter) == relay.ARMED


def test_the_push_button_is_locked_during_the_lockout_after_a_trip(proc, client, meter, clock):
    start = clock.now()
    et05(client, primary=2000, options=1)
    et30(client, exceed_s=5, lockout_s=30)
    quantities.apply(meter, LOAD_2300W, start)
    clock.advance(20)  # tripped at +5 s
    assert client.read(ET54)[71] >> 6 & 1  # ET54.71.6: push button close locked
    clock.advance(15)
    assert not client.read(ET54)[71] >> 6 & 1
    quantities.apply(meter, {"current": 5}, clock.now())  # 1150 W: below the level
    triggers.fire(meter, "button", "on", clock.now())
    assert relay.disconnect_state(meter) == relay.CONNECTED
    assert not client.read(ET30)[8] & 1  # closed: the trip is over


def test_a_short_excursion_does_not_trip_and_ep22_switches_the_level(proc, client, meter, clock):
    start = clock.now()
    et05(client, primary=2000, secondary=3000, options=1)
    et30(client, exceed_s=60)
    quantities.apply(meter, LOAD_2300W, start)
    quantities.apply(meter, {"current": 5}, start + 59)  # back under after 59 s
    quantities.apply(meter, LOAD_2300W, start + 100)
    assert proc(EP22, bytes([1]))[0] == COMPLETED  # secondary level 3000 W: 2300 W is fine
    meter.advance(start + HOUR)
    assert relay.disconnect_state(meter) == relay.CONNECTED
    assert state_document(meter, start + HOUR)["relay"]["max_power_threshold_w"] == 3000


def test_auto_reconnect_recloses_after_the_lockout_and_trips_again(proc, client, meter, clock):
    start = clock.now()
    et05(client, primary=2000, options=0b101)  # thresholds on, reclose by itself
    et30(client, exceed_s=10, lockout_s=20)
    quantities.apply(meter, LOAD_2300W, start)
    meter.advance(start + 55)
    # open at 10, closed at 30, open at 40 (and closed again at 60)
    assert stamped(meter, E_SWITCH) == [int(start) + t for t in (10, 30, 40)]
    assert [a >> 8 for _, a in events(meter, E_SWITCH)] == [relay.Reason.MAX_POWER] * 3


def test_a_current_level_trips_on_any_phase(proc, client, meter, clock):
    start = clock.now()
    et05(client, options=1)
    et30(client, current_ma=8000, exceed_s=2)
    assert client.read(ET46)[11] == 1  # current measurements decide
    quantities.apply(meter, LOAD_2300W, start)
    meter.advance(start + 3)
    assert relay.contactor_open(meter) and client.read(ET30)[8] & 0b11 == 0b10


# ---- the ET61 calendar -----------------------------------------------------------------------


def switch(hour: int, minute: int, closed: bool) -> bytes:
    return (int(closed) | minute << 5 | hour << 11).to_bytes(2, "little")


def test_the_calendar_switches_the_control_relay_at_local_times(proc, client, meter, clock):
    start = clock.now()  # 2026-01-01 00:00 UTC = 01:00 local (UTC+1)
    assert client.write(ET61, switch(8, 0, False) + switch(18, 30, True)) == b"\x00"
    et05(client, modes=1)
    clock.advance(60)
    assert relay.control_state(meter, 1) == relay.CLOSED
    meter.advance(start + 2 * 86_400)
    opened, closed = start + 7 * HOUR, start + 17.5 * HOUR  # 08:00 and 18:30 local
    assert stamped(meter, E_SCHEDULE) == [int(t) + d for d in (0, 86_400) for t in (opened,
                                                                                     closed)]
    assert events(meter, E_SCHEDULE, E_RELAY_OPEN)[:3] == [
        (E_SCHEDULE, 0x0102), (E_RELAY_OPEN, 0), (E_SCHEDULE, 0x0101)]


def test_the_calendar_can_drive_the_contactor_and_randomize(proc, client, meter, clock):
    start = clock.now()
    assert client.write(ET61, switch(2, 0, False)) == b"\x00"
    et05(client, modes=1, options=0b10, window=600)
    quantities.apply(meter, LOAD_2300W, start)
    meter.advance(start + HOUR + 1)  # 02:00 local
    assert relay.disconnect_state(meter) == relay.DISCONNECTED
    assert events(meter, E_SWITCH)[-1] == (E_SWITCH, argument(1, 2, relay.Reason.SCHEDULE))
    assert fwd_wh(meter) == 2300  # metered up to the switch point, not after
    et54 = client.read(ET54)
    assert et54[62] == 1 and 1 <= int.from_bytes(et54[65:67], "little") <= 600
    meter.advance(start + 2 * HOUR)
    assert relay.control_state(meter, 1) == relay.OPEN


def test_the_calendar_stays_still_with_the_feature_off(proc, client, meter, clock):
    assert client.write(ET61, switch(2, 0, False)) == b"\x00"
    et05(client, modes=1)
    assert proc(EP07, bytes([2, 0]))[0] == COMPLETED  # feature 2 time-based relay off
    meter.advance(clock.now() + 86_400)
    assert relay.control_state(meter, 1) == relay.CLOSED


# ---- every reason's event 66 argument, switch failures and power-up -------------------------


def test_switch_failure_and_resynchronization(proc, client, meter, clock):
    assert proc(EP02, bytes([CONTACTOR, OPEN, 0, 0]))[0] == COMPLETED
    triggers.fire(meter, "disconnect_switch_error", "on", clock.now())
    assert bt03_bit(client, 2, 7)  # Disconnect Switch Error (BT03.1-2 flag 15)
    triggers.fire(meter, "disconnect_switch_error", "off", clock.now() + 1)
    assert not bt03_bit(client, 2, 7)
    assert events(meter, E_SWITCH)[1:] == [
        (E_SWITCH, argument(2, 2, relay.Reason.EP02, failed=True)),
        (E_SWITCH, argument(2, 2, relay.Reason.RESYNC))]
    quantities.apply(meter, LOAD_2300W, clock.now() + 2)
    triggers.fire(meter, "outage", "on", clock.now() + 10)
    triggers.fire(meter, "outage", "off", clock.now() + 20)
    assert events(meter, E_SWITCH)[-1] == (E_SWITCH, argument(2, 2, relay.Reason.POWER_UP_RESYNC))


# ---- the MQTT state and old state files ------------------------------------------------------


def test_the_mqtt_state_shows_the_switches(proc, client, meter, clock):
    assert proc(EP21, bytes([2]) + u32(1234))[0] == COMPLETED
    assert proc(EP02, bytes([1, OPEN, 0, 0]))[0] == COMPLETED
    assert proc(EP23, bytes([0]))[0] == COMPLETED
    shown = state_document(meter, clock.now())["relay"]
    assert shown == dict(disconnect="disconnected", reason="ep23",
                         control_relays={"1": "open", "2": "closed"},
                         max_power_level="primary", max_power_threshold_w=0, tripped=False,
                         credit_wh=1234, credit_exhausted=False)


def test_relay_and_prepay_state_saved_before_these_fields_still_load(clock):
    old = MeterState(subsystems={
        "relay": {"disconnect": "armed", "control": ["open", "closed"], "last_switch": None,
                  "lock_open_at": None, "lock_open_user": 0,
                  "randomized": [{"target": "closed", "due": clock.now() + 5, "user": 1},
                                 None], "random_start": [5, 0]},
        "prepay": {"credit": 42}})
    meter = Meter(load_profile(), old, now=clock.now())
    meter.advance(clock.now() + 10)
    assert relay.control_state(meter, 1) == relay.CLOSED  # the old pending command ran (49)
    assert events(meter, 49) == [(49, 0x0101)]
    assert relay.credit(meter) == 42 and state_document(meter, clock.now())["relay"]["reason"] \
        is None
    triggers.fire(meter, "button", "on", clock.now() + 20)
    assert relay.disconnect_state(meter) == relay.CONNECTED
