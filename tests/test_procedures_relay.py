"""Relay, maximum power and prepay procedures (EP02, EP21, EP22, EP23, EP30, EP36) through the
optical port: BT07 in, BT08 out, and each effect where a client sees it (ET23, ET30, ET54, BT03,
the history log)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import Procedures, MK, PK, RK, LinkClient

from meter_emu.clock import ManualClock
from meter_emu.device import relay
from meter_emu.device.meter import Meter, MeterState
from meter_emu.ports.optical import optical_protocol
from meter_emu.profile import load_profile

EP02, EP21, EP22, EP23, EP30, EP36 = (2048 + n for n in (2, 21, 22, 23, 30, 36))
ET05, ET23, ET30, ET54 = (2048 + n for n in (5, 23, 30, 54))
COMPLETED, NOT_COMPLETED, INVALID, TIMING, NO_AUTH = 0, 1, 2, 4, 5
CONTACTOR, RELAY_1, RELAY_2 = 0, 1, 2
OPEN, CLOSE, ARM, LOCK = 0, 1, 2, 3




def ep02(switch: int, action: int, window: int = 0) -> bytes:
    return bytes([switch, action]) + window.to_bytes(2, "little")


def events(meter, *numbers: int) -> list[tuple[int, int]]:
    """(event, argument) of the history log entries with these event numbers, oldest first."""
    return [(e[3], e[4]) for e in meter.state.history.entries if e[3] in numbers]


def bt03_bit(client, offset: int, bit: int) -> bool:
    return bool(client.read(3)[offset] >> bit & 1)


@pytest.fixture
def proc(client):
    client.logon(MK)
    return Procedures(client)


def on_firmware(version: str) -> tuple[Meter, Procedures, LinkClient]:
    meter = Meter(load_profile(overrides=[f"identity.firmware_version={version}"]))
    client = LinkClient(optical_protocol(meter, ManualClock()))
    client.logon(MK)
    return meter, Procedures(client), client


# ---- EP02: the load disconnect contactor ---------------------------------------------------


def test_ep02_opens_and_closes_the_contactor(proc, client, meter, clock):
    assert client.read(ET23)[94] == 0  # closed
    assert proc(EP02, ep02(CONTACTOR, OPEN)) == (COMPLETED, bytes([2, 0, 0]) + bytes(9))
    assert client.read(ET23)[94] == 2  # opened (MEP p.99)
    assert bt03_bit(client, 4, 2)  # Load Disconnect Has Changed State
    # event 66: state 2 open, bits 6/7 previously closed, reason 1 (EP02); event 49: contactor
    assert events(meter, 66, 49) == [(66, 0x01C2), (49, 0x0002)]
    clock.advance(10)  # ET30's reconnect lockout
    assert proc(EP02, ep02(CONTACTOR, CLOSE))[0] == COMPLETED
    assert client.read(ET23)[94] == 0
    assert events(meter, 66, 49)[2:] == [(66, 0x0101), (49, 0x0001)]  # logged with the bit set


def test_ep02_contactor_lockout_and_states_that_do_not_move_it(proc, client, meter, clock):
    assert proc(EP02, ep02(CONTACTOR, OPEN))[0] == COMPLETED
    assert proc(EP02, ep02(CONTACTOR, CLOSE))[0] == TIMING  # at least 10 s between moves
    assert client.read(ET23)[94] == 2
    assert proc(EP02, ep02(CONTACTOR, LOCK)) == (COMPLETED, bytes([3, 0, 0]) + bytes(9))
    assert proc(EP02, ep02(CONTACTOR, ARM))[0] == COMPLETED  # still open: no lockout
    assert relay.disconnect_state(meter) == relay.ARMED
    assert events(meter, 66) == [(66, 0x01C2), (66, 0x0103), (66, 0x0102)]
    clock.advance(9)
    assert proc(EP02, ep02(CONTACTOR, CLOSE))[0] == TIMING
    clock.advance(1)
    assert proc(EP02, ep02(CONTACTOR, CLOSE)) == (COMPLETED, bytes([1, 0, 0]) + bytes(9))
    assert proc(EP02, ep02(CONTACTOR, CLOSE))[0] == COMPLETED  # already closed: nothing logged
    assert len(events(meter, 66)) == 4


def test_ep02_lockout_follows_et30(proc, client, clock):
    assert client.write(ET30, (60).to_bytes(2, "little"), 6) == b"\x00"
    assert proc(EP02, ep02(CONTACTOR, OPEN))[0] == COMPLETED
    clock.advance(59)
    assert proc(EP02, ep02(CONTACTOR, CLOSE))[0] == TIMING
    clock.advance(1)
    assert proc(EP02, ep02(CONTACTOR, CLOSE))[0] == COMPLETED


# ---- EP02: control relays -------------------------------------------------------------------


def test_ep02_control_relay_open_raises_its_alarm_and_logs_67(proc, client, meter):
    assert proc(EP02, ep02(RELAY_1, OPEN)) == (COMPLETED, bytes([2, 0, 0]) + bytes(9))
    assert bt03_bit(client, 4, 3)  # Control Relay Open
    assert events(meter, 49, 67) == [(49, 0x0102), (67, 0)]
    assert client.read(ET23)[94] == 0  # the contactor did not move
    assert proc(EP02, ep02(RELAY_1, CLOSE))[0] == COMPLETED  # no lockout on a control relay
    assert not bt03_bit(client, 4, 3)
    assert events(meter, 49, 67)[2:] == [(49, 0x0101)]


def test_ep02_randomized_control_relay_switches_at_its_instant(proc, client, meter, clock):
    meter, start = meter, clock.now()
    result, data = proc(EP02, ep02(RELAY_1, OPEN, window=600))
    delay = int.from_bytes(data[1:3], "little")
    assert result == NOT_COMPLETED and data[0] == 2 and 1 <= delay <= 600
    et54 = client.read(ET54)
    assert et54[62] == 1  # Control Relay 1 Random Operation Pending (MEP p.134)
    assert int.from_bytes(et54[63:65], "little") == delay  # time remaining
    assert int.from_bytes(et54[65:67], "little") == delay  # random start duration
    assert relay.next_due(meter) == start + delay
    clock.advance(delay - 1)
    assert int.from_bytes(client.read(ET54)[63:65], "little") == 1
    assert not bt03_bit(client, 4, 3)
    clock.advance(5)
    assert bt03_bit(client, 4, 3)
    entry = [e for e in meter.state.history.entries if e[3] == 67][0]
    assert entry[0] == start + delay and entry[2] == 1  # at its instant, by the commander
    et54 = client.read(ET54)
    assert et54[62:65] == bytes(3) and int.from_bytes(et54[65:67], "little") == delay
    assert relay.next_due(meter) is None


def test_ep02_immediate_command_cancels_a_randomized_one(proc, client, meter, clock):
    assert proc(EP02, ep02(RELAY_1, OPEN, window=60))[0] == NOT_COMPLETED
    assert proc(EP02, ep02(RELAY_1, CLOSE))[0] == COMPLETED
    clock.advance(61)
    assert not bt03_bit(client, 4, 3)
    assert client.read(ET54)[62] == 0
    assert events(meter, 49, 67) == []  # it was closed already: nothing happened


def test_ep02_second_control_relay_from_firmware_430():
    meter, proc, client = on_firmware("4.30.01")
    assert proc(EP02, ep02(RELAY_2, OPEN))[0] == COMPLETED
    assert client.read(3)[9] & 1  # BT03 Control Relay (2) Open
    assert events(meter, 49, 67) == [(49, 0x0202)]  # relay 2 has no event of its own
    proc(EP02, ep02(RELAY_2, CLOSE, window=30))
    et54 = client.read(ET54)
    assert et54[-5] == 1 and 1 <= int.from_bytes(et54[-4:-2], "little") <= 30


@pytest.mark.parametrize("params", [
    ep02(3, OPEN),  # no such switch
    ep02(RELAY_2, OPEN),  # firmware 3.10 has one control relay
    ep02(CONTACTOR, 4),  # no such action
    ep02(RELAY_1, ARM),  # arming is the contactor's
    ep02(CONTACTOR, OPEN, window=10),  # the contactor is not randomized
    bytes([CONTACTOR, OPEN]),  # too short
])
def test_ep02_invalid_parameters(proc, client, meter, params):
    assert proc(EP02, params)[0] == INVALID
    assert client.read(ET23)[94] == 0 and events(meter, 49, 66, 67) == []


# ---- EP23, EP30, EP36 -----------------------------------------------------------------------


def test_ep23_disconnects_arms_and_reconnects(proc, client, meter, clock):
    assert proc(EP23, bytes([0])) == (COMPLETED, bytes([2]) + bytes(11))
    assert client.read(ET23)[94] == 2
    assert proc(EP23, bytes([2]))[0] == COMPLETED  # armed for the customer
    assert proc(EP23, bytes([1]))[0] == TIMING
    clock.advance(10)
    assert proc(EP23, bytes([1])) == (COMPLETED, bytes([1]) + bytes(11))
    assert client.read(ET23)[94] == 0
    assert events(meter, 66, 49) == [(66, 0x05C2), (49, 0x0002), (66, 0x0502), (49, 0x0002),
                                     (66, 0x0501), (49, 0x0001)]  # reason 5 = EP23
    assert proc(EP23, bytes([3]))[0] == INVALID


def test_ep30_resynchronizes_the_contactor(proc, client, meter):
    meter.raise_alarm("disconnect_switch_error")
    assert bt03_bit(client, 2, 7)
    assert proc(EP30) == (COMPLETED, bytes([1]) + bytes(11))
    assert not bt03_bit(client, 2, 7)
    assert events(meter, 66) == [(66, 0x08C1)]  # still closed, reason 8 = EP30
    assert bt03_bit(client, 4, 2)
    assert client.read(ET23)[94] == 0


def lock_time(moment: dt.datetime) -> bytes:
    return bytes([moment.year - 2000, moment.month, moment.day, moment.hour, moment.minute,
                  moment.second])


def test_ep36_locks_the_contactor_open_at_the_scheduled_instant(proc, client, meter, clock):
    meter, start = meter, clock.now()
    at = dt.datetime.fromtimestamp(start + 3600, dt.timezone.utc)
    assert proc(EP36, lock_time(at))[0] == COMPLETED
    assert relay.next_due(meter) == start + 3600
    clock.advance(3599)
    assert client.read(ET23)[94] == 0
    clock.advance(100)
    assert client.read(ET23)[94] == 2
    assert relay.disconnect_state(meter) == relay.LOCKED_OPEN
    lock = [e for e in meter.state.history.entries if e[3] == 66][0]
    assert lock[0] == start + 3600 and lock[4] == 0x07C3  # locked open, reason 7 (schedule)
    assert events(meter, 50) == [(50, 0x0003)]  # Control Point Changed by the Schedule
    assert relay.next_due(meter) is None
    clock.advance(10)
    assert proc(EP02, ep02(CONTACTOR, CLOSE))[0] == COMPLETED  # a remote close ends the lock


def test_ep36_cancel_and_a_time_already_past(proc, client, meter, clock):
    soon = dt.datetime.fromtimestamp(clock.now() + 60, dt.timezone.utc)
    assert proc(EP36, lock_time(soon))[0] == COMPLETED
    assert proc(EP36, bytes(6))[0] == COMPLETED  # all zero cancels
    clock.advance(120)
    assert client.read(ET23)[94] == 0 and relay.next_due(meter) is None
    past = dt.datetime.fromtimestamp(clock.now() - 60, dt.timezone.utc)
    assert proc(EP36, lock_time(past))[0] == COMPLETED
    assert client.read(ET23)[94] == 2  # locked now
    assert [e[2] for e in meter.state.history.entries if e[3] == 66] == [1]  # by the caller


def test_ep36_invalid_time(proc, meter):
    assert proc(EP36, bytes([30, 13, 1, 0, 0, 0]))[0] == INVALID  # month 13
    assert relay.scheduled_lock_open(meter) is None


# ---- EP22 ----------------------------------------------------------------------------------


def test_ep22_switches_the_maximum_power_level(proc, client, meter):
    levels = (6000).to_bytes(4, "little") + (3000).to_bytes(4, "little")
    assert client.write(ET05, levels, 0) == b"\x00"  # primary ET05.0, secondary ET05.4
    assert proc(EP22, bytes([1])) == (COMPLETED, bytes([1]) + (3000).to_bytes(4, "little")
                                      + bytes(7))
    assert client.read(ET30)[8] == 0x04  # status bit 2: the secondary level is active
    assert events(meter, 97) == [(97, 1)]
    assert client.write(ET30, bytes([0]), 8) == b"\x00"  # the status is the meter's
    assert client.read(ET30)[8] == 0x04
    assert relay.max_power_threshold(meter, 0.0) == 3000
    assert proc(EP22, bytes([0]))[1][:5] == bytes([0]) + (6000).to_bytes(4, "little")
    assert proc(EP22, bytes([0]))[0] == COMPLETED  # already primary: nothing logged
    assert client.read(ET30)[8] == 0 and events(meter, 97) == [(97, 1), (97, 0)]
    assert proc(EP22, bytes([2]))[0] == INVALID


# ---- EP21 ----------------------------------------------------------------------------------


def ep21(mode: int, amount: int) -> bytes:
    return bytes([mode]) + amount.to_bytes(4, "little", signed=True)


def credit_of(data: bytes) -> int:
    return int.from_bytes(data[:4], "little", signed=True)


def test_ep21_adds_subtracts_and_sets_the_credit(proc, meter):
    result, data = proc(EP21, ep21(0, 5000))
    assert result == COMPLETED and credit_of(data) == 5000
    assert credit_of(proc(EP21, ep21(1, 7000))[1]) == -2000
    assert credit_of(proc(EP21, ep21(2, 100_000))[1]) == 100_000
    assert credit_of(proc(EP21, ep21(0, 70_000))[1]) == 170_000
    assert credit_of(proc(EP21, ep21(2, -40_000))[1]) == -40_000
    assert relay.credit(meter) == -40_000
    # 53 added, 54 subtracted (the amount), 55 adjusted (the new credit); two bytes, saturated
    assert events(meter, 53, 54, 55) == [(53, 5000), (54, 7000), (55, 0x7FFF), (53, 0xFFFF),
                                         (55, 0x8000)]


@pytest.mark.parametrize("params", [ep21(3, 1), ep21(0, 0), ep21(1, -5), bytes([0, 1])])
def test_ep21_invalid_parameters(proc, meter, params):
    assert proc(EP21, params)[0] == INVALID
    assert relay.credit(meter) == 0 and events(meter, 53, 54, 55) == []


def test_ep21_refuses_a_credit_beyond_int32(proc, meter):
    assert proc(EP21, ep21(2, 2**31 - 1))[0] == COMPLETED
    assert proc(EP21, ep21(0, 1))[0] == INVALID
    assert relay.credit(meter) == 2**31 - 1


# ---- keys and persistence --------------------------------------------------------------------


@pytest.mark.parametrize("number, params", [
    (EP02, ep02(CONTACTOR, OPEN)), (EP21, ep21(0, 1)), (EP22, bytes([1])), (EP23, bytes([0])),
    (EP30, b""), (EP36, bytes(6)),
])
def test_read_only_key_may_not_switch(client, meter, number, params):
    client.logon(RK)
    assert Procedures(client)(number, params)[0] == NO_AUTH
    assert client.read(ET23)[94] == 0 and len(meter.state.history.entries) == 0


def test_provisioning_key_may_switch(client, meter):
    client.logon(PK)
    assert Procedures(client)(EP02, ep02(CONTACTOR, OPEN))[0] == COMPLETED


def test_relay_state_survives_a_restart(proc, meter, clock):
    proc(EP02, ep02(CONTACTOR, LOCK))
    proc(EP02, ep02(RELAY_1, OPEN))
    proc(EP21, ep21(0, 1234))
    saved = MeterState.from_doc(json.loads(json.dumps(meter.state.to_doc())))
    again = Meter(meter.profile, saved)
    assert again.table_bytes(ET23, clock.now())[94] == 2
    assert relay.disconnect_state(again) == relay.LOCKED_OPEN
    assert relay.control_state(again, 1) == relay.OPEN and relay.credit(again) == 1234
