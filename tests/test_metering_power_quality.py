"""Power quality (meter_emu/metering/power_quality.py): sags, swells, over-current, THD, frequency
extremes, unbalance and phase loss against ET09's thresholds (MEP p.67-77), their events in the
alternate event log (ET79) and BT74, ET09's counts and times, hysteresis, EP45, and the engine
feeding it from injected quantities (with the power-up hold time after an outage).

Most tests hand samples to ``power_quality.check`` as the engine's loop does (each held for the
step that ends at ``now``), so every instant is exact; the last ones go through ``meter.advance``.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from meter_emu.device.access import Key
from meter_emu.device.alarms import ALARMS
from meter_emu.device.meter import Meter
from meter_emu.metering import power_quality, quantities
from meter_emu.metering.quantities import Sample
from meter_emu.profile import load_profile
from meter_emu.tables import CATALOG, bt, et
from meter_emu.tables.catalog import WriteContext

NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
START = dt.datetime(2026, 1, 1)
PQ, THD, MAX_THD, SAG, SWELL, OVER, UNBALANCED = 91, 93, 98, 100, 101, 102, 104
LOW_POTENTIAL = 45


def make(*overrides: str) -> Meter:
    return Meter(load_profile(overrides=list(overrides)))


@pytest.fixture
def meter():
    return make()


def sample(phases: int = 1, voltage=230.0, current=0.0, vthd=0.0, ithd=0.0,
           frequency=50.0) -> Sample:
    def each(value):
        return tuple(value) if isinstance(value, (tuple, list)) else (float(value),) * phases

    return Sample(voltage=each(voltage), current=each(current), angle=each(0.0),
                  voltage_thd=each(vthd), current_thd=each(ithd), load_voltage=each(0.0),
                  frequency=frequency, neutral_current=0.0, pulse1=0.0, pulse2=0.0,
                  temperature=25.0)


def hold(meter, start: float, end: float, measured: Sample) -> None:
    """``measured`` over [NOW + start, NOW + end] seconds, as the engine reports a step."""
    power_quality.check(meter, NOW + end, measured, end - start)


def et09(meter):
    return CATALOG[et(9)].layout_for(meter).parse(meter.table_bytes(et(9), NOW))


def set_et09(meter, edit) -> None:
    """Write ET09 with the MK after ``edit(values)`` changed its settings (at NOW: the engine
    has nothing to integrate yet)."""
    layout = CATALOG[et(9)].layout_for(meter)
    values = layout.parse(meter.table_bytes(et(9), NOW))
    edit(values)
    meter.write_table(et(9), layout.build(values), WriteContext(Key.MK, NOW))


def logged(meter, table: int) -> list[tuple[int, int, float]]:
    """(event, argument, seconds after NOW) of ET79's or BT74's entries, oldest first."""
    entries = CATALOG[table].layout_for(meter).parse(meter.table_bytes(table, NOW)).entries
    entries = sorted((e for e in entries if e.time is not None), key=lambda e: e.sequence_number)
    return [(e.event["number"], e.argument, (e.time - START).total_seconds()) for e in entries]


def alternate(meter):
    return logged(meter, et(79))


def history_events(meter) -> list[tuple[int, int]]:
    return [(event, argument) for event, argument, _ in logged(meter, bt(74))]


def alarm(meter, name: str) -> bool:
    offset, bit = ALARMS[name]
    return bool(meter.table_bytes(bt(3), NOW)[offset] >> bit & 1)


# ---- sags and swells ----------------------------------------------------------------------------


def test_a_sag_is_logged_once_and_ends_past_the_hysteresis(meter):
    hold(meter, 0, 10, sample())
    assert alternate(meter) == []
    hold(meter, 10, 70, sample(voltage=200))  # below 230 V - 10 % = 207 V
    assert alternate(meter) == [(PQ, SAG, 10)]  # ET09 time threshold 0: at once
    assert (LOW_POTENTIAL, 1) in history_events(meter)
    assert alarm(meter, "low_loss_potential") and alarm(meter, "power_quality_event")
    hold(meter, 70, 130, sample(voltage=195))
    hold(meter, 130, 190, sample(voltage=208))  # above 207 V, not 1 % (2.3 V) above it
    values = et09(meter)
    assert values.l1_sag1_events == 1 and values.l1_most_recent_sag1_voltage == 195_000
    assert values.l1_most_recent_sag1_event == START + dt.timedelta(seconds=10)
    assert alternate(meter) == [(PQ, SAG, 10)]
    hold(meter, 190, 250, sample(voltage=215))
    assert alternate(meter) == [(PQ, SAG, 10), (SAG, 1, 190)]  # Voltage Sag when it ends
    assert not alarm(meter, "low_loss_potential") and not alarm(meter, "power_quality_event")
    hold(meter, 250, 310, sample(voltage=200))
    assert alternate(meter)[-1] == (PQ, SAG, 250) and et09(meter).l1_sag1_events == 2
    assert [e for e, _ in history_events(meter)].count(LOW_POTENTIAL) == 2


def test_a_swell_must_last_the_time_threshold(meter):
    set_et09(meter, lambda v: v.update(dict(sag1_surge_time_threshold=1)))  # one minute
    swell = sample(voltage=260)  # above 230 V + 10 % = 253 V
    hold(meter, 0, 30, swell)
    assert alternate(meter) == []
    hold(meter, 30, 90, swell)  # the same sample: the meter still watches the clock
    assert alternate(meter) == [(PQ, SWELL, 60)]
    hold(meter, 90, 120, sample(voltage=250))  # below 253 - 2.3 V: over
    assert alternate(meter) == [(PQ, SWELL, 60), (SWELL, 1, 90)]
    values = et09(meter)
    assert values.l1_surge_events == 1 and values.l1_most_recent_surge_voltage == 260_000
    assert values.l1_most_recent_surge_event == START
    hold(meter, 120, 150, swell)  # 30 s: too short to count
    hold(meter, 150, 200, sample())
    assert len(alternate(meter)) == 2 and et09(meter).l1_surge_events == 1


def test_the_early_option_also_logs_sags_when_they_begin():
    meter = make("identity.firmware_version=4.21.00")
    set_et09(meter, lambda v: v.options.update(dict(early_sag_surge_event=1)))
    hold(meter, 0, 10, sample(voltage=190))
    hold(meter, 10, 20, sample())
    assert alternate(meter) == [(PQ, SAG, 0), (SAG, 1, 0), (SAG, 1, 10)]


def test_sag2_records_its_own_threshold_on_firmware_4_10():
    meter = make("identity.firmware_version=4.10.00")
    set_et09(meter, lambda v: v.update(dict(sag2_threshold=50, sag2_time_threshold=5)))
    hold(meter, 0, 3, sample(voltage=100))  # below 50 % of 230 V, but for 3 s only
    hold(meter, 3, 10, sample(voltage=150))
    hold(meter, 10, 20, sample(voltage=110))
    values = et09(meter)
    assert values.l1_sag2_events == 1 and values.l1_most_recent_sag2_voltage == 110_000
    assert values.l1_most_recent_sag2_event == START + dt.timedelta(seconds=10)


# ---- over-current, THD, frequency ---------------------------------------------------------------


def test_over_current_needs_ten_seconds_above_the_maximum_current(meter):
    hold(meter, 0, 5, sample(current=120))  # ET04 max current 100 A, threshold 0 %
    assert alternate(meter) == []
    hold(meter, 5, 20, sample(current=120))
    assert alternate(meter) == [(OVER, 1, 10), (PQ, OVER, 10)]
    hold(meter, 20, 40, sample(current=99.5))  # not 1 A below the threshold: still on
    hold(meter, 40, 60, sample(current=50))
    hold(meter, 60, 80, sample(current=120))
    values = et09(meter)
    assert values.l1_over_current_events == 2
    assert alternate(meter)[-2:] == [(OVER, 1, 70), (PQ, OVER, 70)]


def test_voltage_thd_events_record_count_maximum_and_average(meter):
    set_et09(meter, lambda v: v.thd_records[0].update(dict(thd_threshold=50)))  # 5.0 %, for 10 s
    hold(meter, 0, 60, sample(vthd=8))
    assert alternate(meter) == [(THD, 1, 10), (MAX_THD, 800, 10)]
    assert alarm(meter, "thd_state_changed")
    hold(meter, 60, 120, sample(vthd=6))
    hold(meter, 120, 180, sample(vthd=2))  # below 5 % - 0.5: the event ended at 120 s
    record = et09(meter).thd_records[0].thd_event_records[0]
    assert record.event_count == 1 and record.event_timestamp == START
    assert record.max_thd == 80 and record.max_thd_timestamp == START
    assert record.average_thd == 70  # (8 % x 60 s + 6 % x 60 s) / 120 s
    assert not alarm(meter, "thd_state_changed")
    hold(meter, 180, 220, sample(vthd=7))  # a second event, below the maximum so far
    assert alternate(meter)[2:] == [(THD, 1, 190)]
    assert et09(meter).thd_records[0].thd_event_records[0].event_count == 2


def test_va_thd_combines_voltage_and_current_thd(meter):
    set_et09(meter, lambda v: v.thd_records[2].update(dict(thd_threshold=100)))  # VA-THD 10 %
    hold(meter, 0, 20, sample(vthd=5, ithd=8))  # sqrt(1.0025 x 1.0064) - 1 = 0.45 %
    hold(meter, 20, 40, sample(vthd=30, ithd=40))  # sqrt(1.09 x 1.16) - 1 = 12.4 %
    record = et09(meter).thd_records[2].thd_event_records[0]
    assert record.event_count == 1 and record.max_thd == 124
    assert alternate(meter) == [(THD, 3, 30)]


def test_frequency_extremes_with_their_time(meter):
    hold(meter, 0, 10, sample(frequency=50.0))
    hold(meter, 10, 20, sample(frequency=49.8))
    hold(meter, 20, 30, sample(frequency=50.3))
    hold(meter, 30, 40, sample(frequency=50.0))
    values = et09(meter)
    assert (values.min_frequency, values.max_frequency) == (49_800, 50_300)  # mHz
    assert values.min_freq_date_time == START + dt.timedelta(seconds=10)
    assert values.max_freq_date_time == START + dt.timedelta(seconds=20)


# ---- three phases -------------------------------------------------------------------------------


def test_unbalanced_phase_voltages_raise_the_alarm_while_they_last():
    meter = make("meter.phases=3")
    hold(meter, 0, 60, sample(3, voltage=(240.0, 240.0, 215.0)))  # 25 V of a 231.7 V mean
    assert alternate(meter) == [(UNBALANCED, 0, 0)]
    assert alarm(meter, "unbalanced_voltage")
    hold(meter, 60, 120, sample(3, voltage=(240.0, 238.0, 218.0)))  # 9.4 %: still on
    assert alarm(meter, "unbalanced_voltage")
    hold(meter, 120, 180, sample(3, voltage=(240.0, 236.0, 220.0)))  # 8.6 %
    assert not alarm(meter, "unbalanced_voltage") and len(alternate(meter)) == 1


def test_phase_loss_sets_its_et09_bit_after_the_et55_delay():
    meter = make("meter.phases=3")
    lost = sample(3, voltage=(230.0, 100.0, 230.0))  # below ET04's 61 % of 230 V
    hold(meter, 0, 5, lost)
    assert et09(meter).phase_loss["phase_l2_loss"] == 0
    hold(meter, 5, 30, lost)  # ET55 Phase Loss Threshold Seconds: 10
    values = et09(meter)
    assert values.phase_loss == dict(phase_l1_loss=0, phase_l2_loss=1, phase_l3_loss=0)
    assert values.l2_phase_loss_events == 1 and values.l2_most_recent_phase_loss_event == START
    assert alternate(meter) == [(PQ, SAG, 0)]  # a sag on L2 too (phase bit 2 below)
    assert (LOW_POTENTIAL, 2) in history_events(meter)
    assert not alarm(meter, "unbalanced_voltage")  # a missing phase is no unbalance
    hold(meter, 30, 60, sample(3))
    values = et09(meter)
    assert values.phase_loss["phase_l2_loss"] == 0 and values.l2_phase_loss_events == 1
    assert alternate(meter)[-1] == (SAG, 2, 30)


def test_inactive_phases_are_not_watched():
    meter = make("meter.phases=3")
    layout = CATALOG[et(4)].layout_for(meter)
    values = layout.parse(meter.table_bytes(et(4), NOW))
    values.inactive_phases["voltage_l3"] = 1
    meter.write_table(et(4), layout.build(values), WriteContext(Key.MK, NOW))
    hold(meter, 0, 60, sample(3, voltage=(230.0, 230.0, 0.0)))
    assert alternate(meter) == [] and et09(meter).l3_sag1_events == 0


# ---- cost and state -----------------------------------------------------------------------------


def test_the_same_sample_again_changes_nothing(meter):
    steady = sample()
    hold(meter, 0, 60, steady)
    meter.dirty = False
    hold(meter, 60, 120, steady)
    assert not meter.dirty
    hold(meter, 120, 180, sample())  # an equal new sample is looked at, and changes no record
    assert et09(meter).min_freq_date_time == START and alternate(meter) == []


def test_a_settings_write_takes_effect_at_once(meter):
    hold(meter, 0, 10, sample(voltage=205))  # a sag at 10 %
    set_et09(meter, lambda v: v.update(dict(sag1_threshold=12)))  # below 202.4 V only
    hold(meter, 10, 20, sample(voltage=215))
    hold(meter, 20, 30, sample(voltage=205))
    assert et09(meter).sag1_threshold == 12 and et09(meter).l1_sag1_events == 1


# ---- through the engine -------------------------------------------------------------------------

_PSN = itertools.cycle(range(1, 255))


def run(meter, number: int, now: float) -> int:
    request = number.to_bytes(2, "little") + bytes([next(_PSN)])
    meter.write_table(bt(7), request, WriteContext(Key.MK, now))
    return meter.table_bytes(bt(8), now)[3]


def test_ep45_clears_the_records_and_keeps_settings_and_a_phase_loss(meter):
    set_et09(meter, lambda v: v.update(dict(sag1_threshold=12)))
    quantities.apply(meter, {"voltage": 130, "frequency": 49.9}, NOW + 60)  # sag, phase loss
    meter.advance(NOW + 120)
    values = et09(meter)
    assert values.l1_sag1_events == 1 and values.l1_phase_loss_events == 1
    assert values.phase_loss["phase_l1_loss"] == 1 and values.min_frequency == 49_900
    assert run(meter, 2048 + 45, NOW + 120) == 0  # EP45
    values = et09(meter)
    assert values.sag1_threshold == 12  # a setting
    assert values.phase_loss["phase_l1_loss"] == 1  # a condition in progress
    assert values.l1_sag1_events == 0 and values.l1_phase_loss_events == 0
    assert values.min_frequency == 0 and values.min_freq_date_time is None
    meter.advance(NOW + 180)
    assert et09(meter).l1_sag1_events == 0  # the same sag is not counted again
    assert et09(meter).min_frequency == 49_900
    quantities.apply(meter, {"voltage": 230}, NOW + 240)
    meter.advance(NOW + 300)
    assert alternate(meter) == [(PQ, SAG, 60), (SAG, 1, 240)]
    assert et09(meter).phase_loss["phase_l1_loss"] == 0


def test_nothing_is_recorded_during_the_hold_time_after_an_outage(meter):
    meter.advance(NOW)
    quantities.apply(meter, {"voltage": 0}, NOW + 60)  # every phase below half: an outage
    quantities.apply(meter, {"voltage": 200}, NOW + 120)  # power back, with a sag
    meter.advance(NOW + 180)
    values = et09(meter)
    assert values.l1_sag1_events == 1  # ET09 Power Up Quality Hold Time: 2 s
    assert values.l1_most_recent_sag1_event == START + dt.timedelta(seconds=122)
    assert alternate(meter) == [(PQ, SAG, 122)]
    outage = values.power_outage_records[0]  # the engine's record, newest first
    assert outage.power_off_time == START + dt.timedelta(seconds=60)
    assert outage.power_on_time == START + dt.timedelta(seconds=120)
    assert outage.power_off_duration == 60 and outage.reset_cause == 3
    assert values.short_outage_count == 1  # under ET09's 180 s long-outage threshold


def test_an_outage_ends_a_sag_in_progress_at_its_start(meter):
    meter.advance(NOW)
    quantities.apply(meter, {"voltage": 200}, NOW + 60)
    quantities.apply(meter, {"voltage": 0}, NOW + 120)
    quantities.apply(meter, {"voltage": 230}, NOW + 180)
    meter.advance(NOW + 240)
    assert alternate(meter) == [(PQ, SAG, 60), (SAG, 1, 120)]
    assert not alarm(meter, "low_loss_potential")


def test_virtual_time_going_back_does_not_disturb_the_monitor(meter):
    hold(meter, 100, 110, sample())
    hold(meter, 0, 10, sample(voltage=200))  # a restart with an earlier start time
    hold(meter, 10, 20, sample())
    assert alternate(meter) == [(PQ, SAG, 0), (SAG, 1, 10)]
    assert et09(meter).l1_sag1_events == 1
