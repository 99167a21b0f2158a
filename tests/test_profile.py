"""Profiles: defaults, overrides, and refusals that name the key."""

from __future__ import annotations

import pytest

from meter_emu.profile import ProfileError, load_profile


def test_default_profile_loads():
    profile = load_profile()
    assert profile.meter.id == "meter-1"
    assert profile.key("mk") == b"MK-meter-emu-default"
    assert len(profile.key("rk")) == 20


def test_profile_file_overrides_and_set(tmp_path):
    path = tmp_path / "three-phase.toml"
    path.write_text('[meter]\nid = "m3"\nphases = 3\n[keys]\nmk = "hex:' + "01" * 16 + '"\n')
    profile = load_profile(str(path), ["identity.model=MODEL-3P", "clock.rate=60"])
    assert (profile.meter.id, profile.meter.phases) == ("m3", 3)
    assert profile.identity.model == "MODEL-3P"
    assert profile.clock.rate == 60.0
    assert profile.key("mk") == b"\x01" * 16 + bytes(4)  # NUL-padded to 20 bytes
    assert profile.identity.manufacturer == "NES "  # untouched values keep the defaults


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["identity.model=TOO-LONG-MODEL"], "identity.model"),
        (["meter.colour=red"], "meter.colour"),
        (["identity.serial_number=12AB"], "identity.serial_number"),
        (["identity.firmware_version=3.100.1"], "identity.firmware_version"),
        (["meter.phases=2"], "meter.phases"),
        (["keys.mk=" + "x" * 21], "keys.mk"),
        (["keys.pk=hex:zz"], "keys.pk"),
        (["clock.start=yesterday"], "clock.start"),
        (["clock.start=1999-12-31T00:00:00Z"], "clock.start"),
        (["dimensions.tiers=9"], "dimensions.tiers"),
        (["dimensions.summations=19"], "dimensions.summations must be 6..15"),
        (["load_profile.channels=3"], "load_profile.sources"),
        (["load_profile.interval_minutes=7"], "load_profile.interval_minutes"),
        (["load_profile.interval_minutes=1", "load_profile.blocks=40"], "BT60 memory length"),
        (["optical.max_packet_size=9000"], "optical.max_packet_size"),
        (["meter.id=true"], "meter.id"),  # a boolean where a string belongs
        (["identity=3"], "section.key"),
        (["nonsense"], "section.key=value"),
    ],
)
def test_bad_values_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ProfileError) as error:
        load_profile("default", overrides)
    assert key in str(error.value)


def test_bad_profile_files_are_refused(tmp_path):
    with pytest.raises(ProfileError, match="no profile named 'missing'"):
        load_profile("missing")
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(str(tmp_path / "absent.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[meter\nid = 1")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(broken))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[identity]\nsubnet = 300\n")
    with pytest.raises(ProfileError, match="identity.subnet"):
        load_profile(str(wrong))


def test_named_profile_from_profiles_folder():
    from meter_emu.device.meter import Meter

    profile = load_profile("ansi-strings")
    assert profile.meter.id == "ansi-meter"
    meter = Meter(profile)
    assert meter.table_bytes(1, 1_767_225_600.0)[16:] == b"EMU0000000000001"
    assert meter.table_bytes(5, 1_767_225_600.0) == b"EMU-DEVICE-0001".ljust(20)
