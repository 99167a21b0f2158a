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
        (["dimensions.transaction_request_length=800"], "dimensions.transaction_request_length"),
        (["dimensions.transaction_request_length=-1"], "dimensions.transaction_request_length"),
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


# ---- PLC security: [keys] oma, [security] mode / max_key_usage_count, [plc] sequence_number ----

AES16 = "hex:" + "00112233445566778899aabbccddeeff"


def test_security_defaults():
    profile = load_profile()
    assert profile.oma_key() == b"OMA-emu-dflt" and len(profile.oma_key()) == 12
    assert profile.security.mode == "rc4"
    assert profile.security.max_key_usage_count == 1_000_000  # MEP p.65
    assert profile.plc.sequence_number == 0
    assert "OMA-emu" not in repr(profile) and "MK-meter" not in repr(profile)


@pytest.mark.parametrize("overrides, key, mode", [
    (["keys.oma=hex:" + "0102030405060708090a0b0c"], bytes(range(1, 13)), "rc4"),
    (["keys.oma=ABCDEFGHIJKL"], b"ABCDEFGHIJKL", "rc4"),
    (["security.mode=aes", "keys.oma=" + AES16, "identity.firmware_version=3.13.01"],
     bytes.fromhex(AES16[4:]), "aes"),
    (["security.mode=aes", "keys.oma=0123456789abcdef", "identity.firmware_version=4.30.01"],
     b"0123456789abcdef", "aes"),
])
def test_good_oma_keys_and_modes(overrides, key, mode):
    profile = load_profile("default", overrides)
    assert profile.oma_key() == key and profile.security.mode == mode


@pytest.mark.parametrize("value", ["1", "4294967295"])
def test_good_counts(value):
    profile = load_profile("default", ["security.max_key_usage_count=" + value,
                                       "plc.sequence_number=" + value])
    assert profile.security.max_key_usage_count == profile.plc.sequence_number == int(value)


@pytest.mark.parametrize("overrides, message", [
    (["keys.oma=short"], "keys.oma must be 12 (RC4) or 16 (AES)"),
    (["keys.oma=ABCDEFGHIJKLM"], "keys.oma"),  # 13 characters
    (["keys.oma=hex:" + "0g" * 12], "keys.oma must be hex: and 24 or 32"),
    (["keys.oma=hex:" + "01" * 10], "keys.oma must be hex: and 24 or 32"),
    (["keys.oma=hex:" + "00" * 12], "keys.oma must not be all zero"),
    (["keys.oma=" + AES16], 'keys.oma is 16 bytes, but security.mode = \'rc4\' needs 12'),
    (["security.mode=aes", "identity.firmware_version=3.80.00"],
     "keys.oma is 12 bytes, but security.mode = 'aes' needs 16"),
    (["security.mode=aes", "keys.oma=" + AES16], "firmware 3.13 or 3.80"),
    (["security.mode=aes", "keys.oma=" + AES16, "identity.firmware_version=3.50.00"],
     "security.mode"),
    (["security.mode=des"], 'security.mode must be "rc4" or "aes"'),
    (["security.mode=2"], "security.mode must be str"),
    (["security.max_key_usage_count=0"], "security.max_key_usage_count must be 1..2^32-1"),
    (["security.max_key_usage_count=4294967296"], "security.max_key_usage_count"),
    (["plc.sequence_number=-1"], "plc.sequence_number must be 0..2^32-1"),
    (["plc.sequence_number=4294967296"], "plc.sequence_number"),
    (["plc.sequence_number=one"], "plc.sequence_number must be int"),
    (["plc.sequence=1"], "plc.sequence"),
])
def test_bad_security_values_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ProfileError) as error:
        load_profile("default", overrides)
    assert message in str(error.value)


def test_aes_profile_file(tmp_path):
    path = tmp_path / "aes.toml"
    path.write_text('[identity]\nfirmware_version = "3.80.00"\n[keys]\noma = "' + AES16 + '"\n'
                    '[security]\nmode = "aes"\nmax_key_usage_count = 500\n[plc]\n'
                    'sequence_number = 7\n')
    profile = load_profile(str(path))
    assert (profile.security.mode, profile.security.max_key_usage_count,
            profile.plc.sequence_number) == ("aes", 500, 7)
    path.write_text('[security]\nmode = "aes"\n')
    with pytest.raises(ProfileError, match="keys.oma is 12 bytes"):
        load_profile(str(path))
