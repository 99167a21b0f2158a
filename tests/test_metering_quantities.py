"""Injectable quantities: payload checks, generators, per-phase settings, persistence."""

from __future__ import annotations

import math

import pytest

from meter_emu.device.meter import Meter, MeterState
from meter_emu.metering import quantities
from meter_emu.metering.quantities import InjectionError
from meter_emu.profile import ProfileError, load_profile

T0 = 1_767_225_600.0


def meter(*overrides: str) -> Meter:
    return Meter(load_profile(overrides=list(overrides)))


def test_defaults_are_the_rated_voltage_and_frequency_with_no_load():
    m = meter("ratings.voltage_v=120", "ratings.frequency_hz=60")
    s = quantities.sample(m, T0)
    assert s.voltage == (120.0,) and s.frequency == 60.0
    assert s.current == (0.0,) and s.angle == (0.0,) and s.temperature == 25.0


def test_pf_becomes_the_lagging_angle_and_a_negative_pf_a_leading_one():
    m = meter()
    quantities.apply(m, {"pf": 0.5}, T0)
    assert quantities.sample(m, T0).angle[0] == pytest.approx(60.0)
    quantities.apply(m, {"pf": -0.5}, T0)
    assert quantities.sample(m, T0).angle[0] == pytest.approx(-60.0)


def test_constant_updates_give_the_sample_a_fresh_evaluation_gives():
    """Constants set on a constant meter only rebuild the quantities they change; the
    result must be what evaluating every setting gives, also after a generator came and went
    and for one phase set on its own."""
    m = meter("meter.phases=3")
    steps = [{"voltage": [229.5, 230.5, 231.0], "current": 4.0, "pf": 0.9},
             {"frequency": 50.1},
             {"voltage": {"type": "sine", "mean": 230, "amplitude": 5, "period_s": 60}},
             {"voltage": 231.5, "temperature": 30}]
    for n, payload in enumerate(steps):
        quantities.apply(m, payload, T0 + n)
        assert quantities.sample(m, T0 + n + 0.5) == quantities._build(
            m, quantities._state(m, T0)["settings"], T0 + n + 0.5)
    quantities.apply_one(m, "current", 2, "7.5", T0 + 10)
    fresh = quantities._build(m, quantities._state(m, T0)["settings"], T0 + 10)
    assert quantities.sample(m, T0 + 10) == fresh and fresh.current == (4.0, 7.5, 4.0)
    assert fresh.voltage == (231.5,) * 3 and fresh.temperature == 30.0


def test_a_number_sets_every_phase_and_a_list_one_value_per_phase():
    m = meter("meter.phases=3")
    quantities.apply(m, {"voltage": 231.5, "current": [1, 2, 3]}, T0)
    s = quantities.sample(m, T0)
    assert s.voltage == (231.5, 231.5, 231.5) and s.current == (1.0, 2.0, 3.0)
    quantities.apply_one(m, "voltage", 2, "200", T0 + 1)
    assert quantities.sample(m, T0 + 1).voltage == (231.5, 200.0, 231.5)


@pytest.mark.parametrize("payload, message", [
    ({"volts": 230}, "unknown quantity 'volts'"),
    ({"voltage": "230"}, "expected a number"),
    ({"voltage": -1}, "outside 0..1000"),
    ({"pf": 1.5}, "within -1..1"),
    ({"frequency": [50]}, "a single value"),
    ({"current": [1, 2]}, "2 values for a 1-phase meter"),
    ({"pf": 1, "angle": 0}, "given twice"),
    ({"current": {"type": "square"}}, "generator type"),
    ({"current": {"type": "sine", "mean": 5}}, "needs amplitude, period_s"),
    ({"current": {"type": "sine", "mean": 5, "amplitude": 1, "period_s": 0}}, "period_s"),
    ({"current": {"type": "ramp", "from": 0, "to": 5, "duration_s": 10, "x": 1}}, "unknown"),
    ({"current": {"type": "csv", "points": [[0, 1], [0, 2]]}}, "increase"),
    ({"voltage": float("nan")}, "expected a number"),
])
def test_bad_payloads_are_refused_whole_with_a_message(payload, message):
    m = meter()
    quantities.apply(m, {"current": 5.0}, T0)
    with pytest.raises(InjectionError, match=message):
        quantities.apply(m, {"voltage": 240.0, **payload}, T0 + 1)
    s = quantities.sample(m, T0 + 1)
    assert s.voltage == (230.0,) and s.current == (5.0,)  # nothing of it was applied


def test_generators_follow_their_formula_from_the_instant_they_were_set():
    m = meter()
    quantities.apply(m, {
        "voltage": {"type": "sine", "mean": 230, "amplitude": 10, "period_s": 40},
        "current": {"type": "ramp", "from": 0, "to": 20, "duration_s": 100},
    }, T0)
    s = quantities.sample(m, T0 + 10)  # a quarter period, a tenth of the ramp
    assert s.voltage[0] == pytest.approx(240.0) and s.current[0] == pytest.approx(2.0)
    assert quantities.sample(m, T0 + 500).current[0] == 20.0  # the ramp holds its end value
    assert not quantities.is_constant(m, T0)
    assert quantities.next_change(m, T0 + 10) == T0 + 100  # the ramp's end


def test_noise_is_reproducible_and_changes_per_step():
    m = meter()
    spec = {"type": "noise", "mean": 10, "sd": 1, "seed": 7, "step_s": 60}
    quantities.apply(m, {"current": spec}, T0)
    a, b, c = (quantities.sample(m, T0 + t).current[0] for t in (5, 50, 65))
    assert a == b != c
    other = meter()
    quantities.apply(other, {"current": spec}, T0)
    assert quantities.sample(other, T0 + 65).current[0] == c
    values = [quantities.sample(m, T0 + 60 * k).current[0] for k in range(400)]
    assert abs(sum(values) / len(values) - 10) < 0.2


def test_csv_replay_holds_interpolates_and_loops(tmp_path):
    path = tmp_path / "load.csv"
    path.write_text("time_s,current\n0,1\n10,5\n20,3\n")
    m = meter()
    quantities.apply(m, {"current": {"type": "csv", "file": str(path)}}, T0)
    assert [quantities.sample(m, T0 + t).current[0] for t in (0, 9.9, 10, 25)] == [1, 1, 5, 3]
    assert quantities.next_change(m, T0 + 3) == T0 + 10
    assert quantities.next_change(m, T0 + 25) is None
    quantities.apply(m, {"current": {"type": "csv", "points": [[0, 0], [10, 10]],
                                     "interpolate": True, "loop": True}}, T0)
    assert quantities.sample(m, T0 + 5).current[0] == pytest.approx(5.0)
    assert quantities.sample(m, T0 + 13).current[0] == pytest.approx(3.0)  # looped
    with pytest.raises(InjectionError, match="cannot read"):
        quantities.apply(m, {"current": {"type": "csv", "file": str(tmp_path / "none")}}, T0)


def test_settings_survive_a_restart_and_generators_continue():
    m = meter()
    quantities.apply(m, {"current": {"type": "ramp", "from": 0, "to": 10, "duration_s": 100}},
                     T0)
    restored = Meter(m.profile, MeterState.from_doc(m.state.to_doc()))
    assert quantities.sample(restored, T0 + 50).current[0] == pytest.approx(5.0)


def test_the_profile_sets_the_initial_quantities_and_refuses_bad_ones():
    profile = load_profile(overrides=['quantities.initial={current = 12.5, pf = 0.8}'])
    s = quantities.sample(Meter(profile), T0)
    assert s.current == (12.5,) and math.cos(math.radians(s.angle[0])) == pytest.approx(0.8)
    with pytest.raises(ProfileError, match="quantities.initial: unknown quantity 'amps'"):
        load_profile(overrides=['quantities.initial={amps = 1}'])


def test_mqtt_names_must_be_topic_safe():
    with pytest.raises(ProfileError, match="meter.id"):
        load_profile(overrides=['meter.id="a+b"'])
    with pytest.raises(ProfileError, match="mqtt.groups"):
        load_profile(overrides=['mqtt.groups=["x/y"]'])
    with pytest.raises(ProfileError, match="mqtt.prefix"):
        load_profile(overrides=['mqtt.prefix="lab/#"'])


def test_a_generator_start_aligns_it_with_the_clock_whenever_it_is_set():
    m = meter()
    spec = {"type": "csv", "start": "2026-01-01T00:00:00Z", "points": [[0, 4], [3600, 8]]}
    quantities.apply(m, {"current": spec}, T0 + 600)  # set 10 minutes after its time zero
    assert quantities.sample(m, T0 + 3599).current == (4.0,)
    assert quantities.sample(m, T0 + 3600).current == (8.0,)
    assert quantities.next_change(m, T0 + 700) == T0 + 3600
    with pytest.raises(InjectionError, match="start"):
        quantities.apply(m, {"current": {**spec, "start": "yesterday"}}, T0)
