"""System procedures: calibration, restart, log dimensions, features, the clock, keys, broadcast
groups, the battery, diagnostic counters, the meter's mode, self check and the prepay warning.

Names and numbers of EP00, EP01, EP16, EP20, EP27 and EP28 are in the Echelon ANSI meter user's
guide's procedure list (ECH p.46; EP27's ten groups p.68), the firmware family of the OSGP meters;
EP06 and EP37 are named by what the MEP guide says they do (p.65, p.107-109), EP16 also by the MEP
guide (p.13, p.262). EP07, EP29, EP31, EP35, EP42 and EP43 carry procedures the OSGP overview
slides list without a number ("Activate Feature", "Read/Write Diagnostic Counters") or that a
documented event needs (30/31 and 34/35 test and shop mode, 38 self check, 85 prepay warning
acknowledged): their numbers are free slots we chose. No guide gives any parameter layout here,
so every layout is ours (designed) and as small as the action needs.

State, per subsystem (``meter.subsystem``): ``mode`` (EP35, BT03 byte 0), ``diagnostics``
(EP29/EP31 counters), ``calibration`` (EP00), ``features`` (EP07); EP20's keys and their usage
are device/keys.py's; EP06 and EP37 keep theirs with ET36 (tables/extended.py), EP27 its
groups in ET55 and EP28 its flag in ET02 (tables/system.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from construct import Bytes, GreedyBytes, Int32sl, Struct

from .. import events
from ..datatypes import UINT8, UINT16, Bits, LTimeDate
from ..device import conditions, keys
from ..device.access import CONFIGURERS, READERS, Key
from ..provenance import designed, documented
from .basic import _rk_may_set_clock
from .catalog import ProcedureFailed, Result, ResultCode, declare, ep

_ECH = "name and number: Echelon ANSI meter user's guide p.46"
_SLOT = "number: a free EP slot we chose"
_KEYS_AND_FIRMWARE = {Key.MK, Key.PLC}  # PK has no key or firmware rights (OPG p.13)
_OPTICAL_AND_HEAD_END = {Key.MK, Key.PK, Key.PLC}


def _fail(code: int, reason: str):
    raise ProcedureFailed(code, reason)


# ---------------------------------------------------------------------------------------
# Diagnostic counters (EP29 reads them, EP31 resets them)
#
# "events_logged" is the event logs' sequence number since the last reset, so it needs no
# hook; the others are counted where they happen, with ``Meter.count``.

#: EP29's response, in order: six UINT16 counters since the last EP31 (saturating at 65535).
COUNTERS = ("procedures", "tables_written", "events_logged", "invalid_passwords",
            "self_check_errors", "self_calibrations")
_COUNTED = set(COUNTERS) - {"events_logged"}


def _diagnostics(meter) -> dict:
    return meter.subsystem("diagnostics", events_base=0)  # Meter.count adds to it


def diagnostic_counters(meter) -> dict[str, int]:
    """The counters since the last EP31 (or since the meter was made)."""
    state = _diagnostics(meter)
    values = {name: state.get(name, 0) for name in _COUNTED}
    values["events_logged"] = (meter.state.history_sequence - state["events_base"]) & 0xFFFFFFFF
    return {name: values[name] for name in COUNTERS}


_EP29_RESPONSE = Struct(*(name / UINT16 for name in COUNTERS))


def _read_counters(meter, p, ctx) -> Result:
    """EP29: answer the diagnostic counters since the last EP31 in BT08, six UINT16 (each stops
    at 65535): procedures run, table images stored, events logged (BT74 and ET79), wrong
    optical passwords, self checks that found a fault (EP42), self calibrations (EP00)."""
    values = {name: min(value, 0xFFFF) for name, value in diagnostic_counters(meter).items()}
    return Result(ResultCode.COMPLETED, _EP29_RESPONSE.build(values))


def _reset_counters(meter, p, ctx) -> Result:
    """EP31: set every diagnostic counter EP29 reads to zero."""
    state = _diagnostics(meter)
    for name in _COUNTED:
        state[name] = 0
    state["events_base"] = meter.state.history_sequence
    meter.dirty = True
    return Result(ResultCode.COMPLETED)


_COUNTERS_WHY = ("the OSGP overview slides list 'Read/Write Diagnostic Counters' without a number "
                 "or layout; " + _SLOT + "; response: the six counters EP29's effect names")
declare(
    ep(29), "Read Diagnostic Counters",
    execute=READERS,  # reading counters changes nothing (RK reads everything but keys, OPG p.13)
    params=Struct(),
    response=_EP29_RESPONSE,
    run=_read_counters,
    provenance=designed(_COUNTERS_WHY),
)
declare(
    ep(31), "Reset Diagnostic Counters",
    execute=CONFIGURERS,
    params=Struct(),
    run=_reset_counters,
    provenance=designed(_COUNTERS_WHY),
)

# ---------------------------------------------------------------------------------------
# EP00 Self Calibration

_EP00_RESPONSE = Struct("calibrations" / UINT16, "time" / LTimeDate())


def _self_calibrate(meter, p, ctx) -> Result:
    """EP00: run the metrology self calibration. The emulated measurement needs no correction,
    so the meter records that it calibrated: BT08 answers how many calibrations it has made
    (never reset, stops at 65535) and when (meter UTC); EP29 counts them since its last reset."""
    state = meter.subsystem("calibration", count=0, last=None)
    state["count"] += 1
    state["last"] = meter.utc_seconds(ctx.now)
    meter.count("self_calibrations")
    meter.dirty = True
    response = dict(calibrations=min(state["count"], 0xFFFF), time=meter.utc(ctx.now))
    return Result(ResultCode.COMPLETED, _EP00_RESPONSE.build(response))


declare(
    ep(0), "Self Calibration",
    # ours: calibration sets billing accuracy; OPG p.13 keeps calibration data from RK
    execute=_KEYS_AND_FIRMWARE,
    params=Struct(),
    response=_EP00_RESPONSE,
    run=_self_calibrate,
    provenance=designed(_ECH + "; no parameters; response data ours (count and time)"),
)

# ---------------------------------------------------------------------------------------
# EP01 Flash Refresh

WATCHDOG_RESET = 4  # event 2's reset cause (Echelon user's guide, event 2)


def _flash_refresh(meter, p, ctx) -> Result:
    """EP01: reprogram the flash with the running code and restart: the history log shows
    Primary Power Down (1) then Primary Power Up (2) with reset cause 4 (watchdog). The restart
    is not an outage: no Power Failure alarm, no outage counted."""
    meter.log_event(events.POWER_DOWN.number, 0, ctx.now, ctx.user_id)
    meter.log_event(events.POWER_UP.number, WATCHDOG_RESET, ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED)


declare(
    ep(1), "Flash Refresh",
    execute=_KEYS_AND_FIRMWARE,
    params=Struct(),
    run=_flash_refresh,
    idempotent=False,  # a restart must not happen inside a transaction
    provenance=documented("Echelon ANSI meter user's guide p.46: 'reprogram flash with running "
                          "code; resets meter'; no parameters"),
)

# ---------------------------------------------------------------------------------------
# EP06 / EP37: adjustable log dimensions (ET36)

#: Logs EP06 may resize: every ET36 log but ET41, whose entries only EP32 sets (MEP p.109).
EP06_LOGS = (31, 32, 38, 45, 75, 81)
#: Logs whose entry size EP37 sets (MEP p.108: "adjustable and configured via EP37").
EP37_LOGS = (32, 45)
#: An ET32/ET45 entry: 8 header bytes (length, ID, handle, status, result), a timestamp and
#: response info (7) and at least one telegram byte; at most 8 + ET11.5 (one ET16 read).
MIN_ENTRY_SIZE = 16
_ENTRY_HEAD = 8

_LOG_RESPONSE = Struct("table" / UINT16, "entry_size" / UINT16, "current_entries" / UINT16)
_LOG_RESULTS = {
    2: "not an adjustable log for this procedure, or entries/entry size out of range",
    3: "the logs would need more than the memory they share (LOG_MEMORY_BYTES)",
}


def _log_number(table: int, allowed: tuple[int, ...]) -> int:
    """The log a TABLE_IDC names (ET36.1: bits 0..10 number, bit 11 extended)."""
    number = table & 0x07FF
    if table & 0xF800 != 0x0800 or number not in allowed:
        _fail(ResultCode.INVALID_PARAMETER,
              f"table ID {table:#06x} is none of ET{', ET'.join(map(str, allowed))}")
    return number


def _resize_log(meter, number: int, entries: int, entry_size: int | None, proc: int, ctx):
    from ..tables import extended

    maximum = dict(extended.ADJUSTABLE_LOGS)[number]
    if entries > maximum:
        _fail(ResultCode.INVALID_PARAMETER, f"ET{number} holds at most {maximum} entries")
    current = extended.adjustable_log(meter, number, ctx.now)
    size = entry_size if entry_size is not None else extended.log_entry_size(
        meter, number, current["entry_size"])
    needed = extended.log_memory(meter, ctx.now, {number: (size, entries)})
    if needed > extended.LOG_MEMORY_BYTES:
        _fail(ResultCode.CONFLICT_WITH_SETUP, f"the logs would need {needed} bytes, "
              f"{extended.LOG_MEMORY_BYTES} are there")
    extended.configure_log(meter, number, entries, entry_size)
    _dimension_changed(meter, proc, ctx)
    return Result(ResultCode.COMPLETED, _LOG_RESPONSE.build(
        dict(table=0x0800 | number, entry_size=size, current_entries=entries)))


def _dimension_changed(meter, proc: int, ctx) -> None:
    """ET04's IDT Version + 1 (MEP p.65), BT03 Dimension Change, event 88 with the procedure
    number (Echelon user's guide, event 88). ET42 is re-read as the meter's reference, so a
    restart does not count this change a second time."""
    from ..tables.extended import increment_idt_version

    increment_idt_version(meter)
    meter.state.interface_digest = None
    meter.check_interface()  # with no previous digest it only records ET42 as it is now
    meter.raise_alarm("dimension_change")
    meter.log_event(events.LOG_DIMENSION_CHANGED.number, proc, ctx.now, ctx.user_id)


_EP06 = Struct("table" / UINT16, "current_entries" / UINT16)


def _configure_log_dimensions(meter, p, ctx) -> Result:
    """EP06: set ET36 Current Entries of one adjustable log (ET31, ET32, ET38, ET45, ET75,
    ET81; TABLE_IDC 0x0800 | n), at most its ET36 Max Entries and within the memory the logs
    share; the log restarts empty with that many entries. Increments ET04's IDT Version (MEP
    sequence + 25), raises BT03 Dimension Change and logs event 88 (argument 2054). BT08 answers
    the log's table ID, entry size and current entries."""
    number = _log_number(p.table, EP06_LOGS)
    return _resize_log(meter, number, p.current_entries, None, ep(6), ctx)


declare(
    ep(6), "Configure Log Dimensions",
    execute=CONFIGURERS,
    params=_EP06,
    response=_LOG_RESPONSE,
    results=_LOG_RESULTS,
    run=_configure_log_dimensions,
    provenance=designed("number: MEP p.65 (EP06 increments the IDT version) and p.107-109 (it "
                        "configures ET36 Current Entries); name and layout ours"),
)

_EP37 = Struct("table" / UINT16, "entry_size" / UINT16, "current_entries" / UINT16)


def _configure_log_entry_size(meter, p, ctx) -> Result:
    """EP37: set ET36 Entry Size and Current Entries of ET32 or ET45 (entry size 16..8 +
    ET11.5 bytes, length field included), within ET36 Max Entries and the memory the logs
    share; the log restarts empty. Increments ET04's IDT Version, raises BT03 Dimension Change
    and logs event 88 (argument 2085); BT08 answers as EP06."""
    from ..tables.dimensions import product_dimensions

    number = _log_number(p.table, EP37_LOGS)
    largest = _ENTRY_HEAD + product_dimensions(meter).data_entry_size
    if not MIN_ENTRY_SIZE <= p.entry_size <= largest:
        _fail(ResultCode.INVALID_PARAMETER,
              f"entry size {p.entry_size} is not {MIN_ENTRY_SIZE}..{largest}")
    return _resize_log(meter, number, p.current_entries, p.entry_size, ep(37), ctx)


declare(
    ep(37), "Configure Log Entry Sizes",
    execute=CONFIGURERS,
    params=_EP37,
    response=_LOG_RESPONSE,
    results=_LOG_RESULTS,
    run=_configure_log_entry_size,
    provenance=designed("number: MEP p.65 (EP37 increments the IDT version) and p.108-109 (ET32 "
                        "and ET45 entry sizes and current entries 'configured via EP37'); name "
                        "and layout ours"),
)

# ---------------------------------------------------------------------------------------
# EP07 Activate Feature

#: Feature IDs (bit n of the bitmap BT08 answers).
FEATURES = ("prepay", "max_power_control", "time_based_relay", "alternate_event_log",
            "load_side_voltage_detection")
_ALL_FEATURES = (1 << len(FEATURES)) - 1


def active_features(meter) -> int:
    """The feature bitmap EP07 keeps (bit n = ``FEATURES[n]``); every feature starts active."""
    return meter.state.subsystems.get("features", {}).get("active", _ALL_FEATURES)


def feature_active(meter, name: str) -> bool:
    """Whether EP07 left feature ``name`` switched on; the engine that owns it asks here."""
    return bool(active_features(meter) >> FEATURES.index(name) & 1)


_EP07 = Struct("feature" / UINT8, "action" / UINT8)
_EP07_RESPONSE = Struct("active_features" / UINT16)


def _activate_feature(meter, p, ctx) -> Result:
    """EP07: switch a feature on (action 1) or off (0): 0 prepay, 1 maximum power control,
    2 time-based relay control, 3 alternate event log, 4 load-side voltage detection. BT08
    answers the bitmap of active features (bit n = feature n; all active on a new meter). The
    bitmap is the meter's record of what the head-end allowed: each feature's engine consults
    ``feature_active``."""
    if p.feature >= len(FEATURES):
        _fail(ResultCode.INVALID_PARAMETER, f"no feature {p.feature} (0..{len(FEATURES) - 1})")
    if p.action > 1:
        _fail(ResultCode.INVALID_PARAMETER, f"action {p.action} is neither 0 (off) nor 1 (on)")
    bitmap = active_features(meter)
    bitmap = bitmap | 1 << p.feature if p.action else bitmap & ~(1 << p.feature)
    meter.subsystem("features")["active"] = bitmap
    meter.dirty = True
    return Result(ResultCode.COMPLETED, _EP07_RESPONSE.build(dict(active_features=bitmap)))


declare(
    ep(7), "Activate Feature",
    execute=_OPTICAL_AND_HEAD_END,  # not a MEP client: prepay and metering features are billing
    params=_EP07,
    response=_EP07_RESPONSE,
    results={2: "unknown feature ID or action"},
    run=_activate_feature,
    provenance=designed("the OSGP overview slides list 'Activate Feature' without a number or "
                        "layout; " + _SLOT + "; feature IDs ours, from the features the slides "
                        "and guides name"),
)

# ---------------------------------------------------------------------------------------
# EP16 Change System Clock by Delta

_EP16 = Struct("delta_seconds" / Int32sl)
_FIRST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc).timestamp()
_LAST = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc).timestamp()  # two-digit years


def _change_clock_by_delta(meter, p, ctx) -> Result:
    """EP16: move the meter clock by a signed number of seconds. Events 3 (stamped with the
    old time) and 4 (with the new time) carry the delta as their argument (INT16, saturated).
    The clock steps at once; a real meter slews it by ET55.4 seconds per minute."""
    delta = p.delta_seconds
    if delta == 0:
        _fail(ResultCode.INVALID_PARAMETER, "a delta of 0 s changes nothing")
    if not _FIRST <= meter.utc_seconds(ctx.now) + delta < _LAST:
        _fail(ResultCode.INVALID_PARAMETER, "the new time would be outside 2000..2099")
    argument = max(-0x8000, min(0x7FFF, delta)) & 0xFFFF
    meter.move_clock(ctx.now, meter.utc_seconds(ctx.now) + delta, ctx.user_id, argument)
    return Result(ResultCode.COMPLETED)


declare(
    ep(16), "Change System Clock by Delta",
    execute={Key.MK, Key.PK, Key.MAK, Key.MBK, Key.PLC},  # MBK may call it (MEP p.13, p.262)
    also_allowed=_rk_may_set_clock,
    params=_EP16,
    run=_change_clock_by_delta,
    idempotent=False,  # MEP p.43: not inside a transaction
    provenance=designed("name and number: MEP p.13, p.262 and the Echelon ANSI meter user's "
                        "guide p.46 ('Update Clock Gradually'); the INT32 delta is ours"),
)

# ---------------------------------------------------------------------------------------
# EP20 Change OMA Key

#: Key slots: the unicast OMA key and the broadcast key (ET54 counts their use separately).
OMA_SLOTS = keys.SLOTS
OMA_KEY_SIZES = tuple(keys.KEY_LENGTHS.values())  # RC4/OMA digest (96 bits) or AES-128

_EP20 = Struct("slot" / UINT8, "key" / GreedyBytes)
_EP20_RESPONSE = Struct("slot" / UINT8, "key_length" / UINT8, "check_value" / Bytes(4))


def key_check_value(key: bytes) -> bytes:
    """Designed key check value: the first 4 bytes of SHA-256 over the key."""
    return hashlib.sha256(key).digest()[:4]


def _change_oma_key(meter, p, ctx) -> Result:
    """EP20: store a new OMA key in slot 0 (unicast) or 1 (broadcast) for the PLC stack, which
    uses it from the next request on: 12 bytes is the RC4 / OMA digest key, 16 bytes the
    OSGP-AES-128-PSK key (ET04.127 says which one is in use; device/keys.py). Changing the key
    in use sets the slot's usage count (ET54.82/.86) and its 80 % warning back. Logs event 108
    with the slot; BT08 answers the slot, the key length and a check value (the first 4 bytes
    of its SHA-256), never the key."""
    if p.slot >= len(OMA_SLOTS):
        _fail(ResultCode.INVALID_PARAMETER, f"no key slot {p.slot} (0 unicast, 1 broadcast)")
    if len(p.key) not in OMA_KEY_SIZES:
        _fail(ResultCode.INVALID_PARAMETER, f"a {len(p.key)}-byte key; 12 or 16 bytes expected")
    if not any(p.key):
        _fail(ResultCode.INVALID_PARAMETER, "an all-zero key")
    keys.set_oma_key(meter, p.slot, p.key)
    meter.log_event(events.OMA_KEY_CHANGED.number, p.slot, ctx.now, ctx.user_id)
    response = dict(slot=p.slot, key_length=len(p.key), check_value=key_check_value(p.key))
    return Result(ResultCode.COMPLETED, _EP20_RESPONSE.build(response))


declare(
    ep(20), "Change OMA Key",
    execute=_KEYS_AND_FIRMWARE,
    params=_EP20,
    response=_EP20_RESPONSE,
    results={2: "unknown slot, key not 12 or 16 bytes, or all zero"},
    run=_change_oma_key,
    provenance=designed(_ECH + " ('Change PLC Encryption Key'; the OSGP slides say 'Change OMA "
                        "Encryption Key'); slot and key layout ours"),
)

# ---------------------------------------------------------------------------------------
# EP27 Add/Remove Group ID

_EP27 = Struct("action" / UINT8, "group_id" / UINT16)
_EP27_RESPONSE = Struct("groups" / UINT8)
_REMOVE, _ADD = 0, 1


def _valid_group(group: int) -> bool:
    """A group this meter can belong to: not 0x0000 and no wildcard byte (0xYYFF, 0xFFYY are
    the broadcast's 'every sub-group'/'everyone', MEP p.131)."""
    return group != 0 and group >> 8 != 0xFF and group & 0xFF != 0xFF


def _add_remove_group(meter, p, ctx) -> Result:
    """EP27: add the meter to broadcast group ``group_id`` (action 1) or remove it (0). The
    groups show in ET55 offsets 24-43 (ten UINT16 slots, ET11.18; 0 = empty). Logs event 109
    with the group ID when membership changes; BT08 answers how many groups the meter is in.
    Adding a group it is already in changes nothing."""
    from ..tables.system import broadcast_groups, set_broadcast_groups
    from ..tables.dimensions import product_dimensions

    if p.action not in (_REMOVE, _ADD):
        _fail(ResultCode.INVALID_PARAMETER, f"action {p.action} is neither 0 nor 1")
    if not _valid_group(p.group_id):
        _fail(ResultCode.INVALID_PARAMETER, f"{p.group_id:#06x} is no group ID")
    groups = broadcast_groups(meter)
    if p.action == _ADD and p.group_id not in groups:
        if len(groups) >= product_dimensions(meter).group_ids:
            _fail(ResultCode.CONFLICT_WITH_SETUP, f"already in {len(groups)} groups (ET11.18)")
        groups.append(p.group_id)
    elif p.action == _REMOVE:
        if p.group_id not in groups:
            _fail(ResultCode.NOT_COMPLETED, f"not a member of group {p.group_id:#06x}")
        groups.remove(p.group_id)
    else:
        return Result(ResultCode.COMPLETED, _EP27_RESPONSE.build(dict(groups=len(groups))))
    set_broadcast_groups(meter, groups)
    meter.log_event(events.GROUP_ID_CHANGED.number, p.group_id, ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED, _EP27_RESPONSE.build(dict(groups=len(groups))))


declare(
    ep(27), "Add/Remove Group ID",
    execute=_OPTICAL_AND_HEAD_END,  # groups decide which secure broadcasts the meter obeys
    params=_EP27,
    response=_EP27_RESPONSE,
    results={1: "remove: the meter is not a member of that group",
             2: "action not 0/1, or 0x0000 or a wildcard (0xYYFF, 0xFFYY) as group ID",
             3: "add: all ET11.18 (10) group slots are taken"},
    run=_add_remove_group,
    provenance=designed("name and number: Echelon ANSI meter user's guide p.46, up to 10 groups "
                        "p.68; layout ours"),
)

# ---------------------------------------------------------------------------------------
# EP28 Enable/Disable Battery

_EP28 = Struct("enable" / UINT8)


def _enable_battery(meter, p, ctx) -> Result:
    """EP28: enable (1) or disable (0) the backup battery: ET02's battery-enabled flag. Logs
    event 110 (argument 1 enabled, 0 disabled) when the flag changes."""
    from ..tables.system import battery_enabled, set_battery_enabled

    if p.enable > 1:
        _fail(ResultCode.INVALID_PARAMETER, f"{p.enable} is neither 0 (disable) nor 1 (enable)")
    if battery_enabled(meter) != bool(p.enable):
        set_battery_enabled(meter, bool(p.enable))
        meter.log_event(events.BATTERY_SWITCHED.number, p.enable, ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED)


declare(
    ep(28), "Enable/Disable Battery",
    execute=CONFIGURERS,
    params=_EP28,
    run=_enable_battery,
    provenance=designed(_ECH + "; the UINT8 flag is ours"),
)

# ---------------------------------------------------------------------------------------
# EP35 Change Test Mode (BT03 byte 0)

METERING, TEST, METER_SHOP = 0, 1, 2
_MODE_FLAGS = ("metering_mode", "test_mode", "meter_shop_mode")  # BT03.0 bits 0, 1, 2
#: (started, stopped) events of the modes other than metering
_MODE_EVENTS = {TEST: (events.TEST_MODE_STARTED, events.TEST_MODE_STOPPED),
                METER_SHOP: (events.SHOP_MODE_STARTED, events.SHOP_MODE_STOPPED)}


def meter_mode(meter) -> int:
    """0 metering, 1 test, 2 meter shop (EP35)."""
    return meter.state.subsystems.get("mode", {}).get("mode", METERING)


def mode_flags(meter) -> dict:
    """BT03 byte 0 (OPG p.45): the flag of the mode the meter is in."""
    return {_MODE_FLAGS[meter_mode(meter)]: 1}


_EP35 = Struct("mode" / UINT8)


def _change_mode(meter, p, ctx) -> Result:
    """EP35: put the meter in metering (0), test (1) or meter shop (2) mode, shown in BT03
    byte 0. Leaving test mode logs event 31, entering it 30; leaving meter shop mode 35,
    entering it 34. Asking for the current mode changes nothing."""
    if p.mode >= len(_MODE_FLAGS):
        _fail(ResultCode.INVALID_PARAMETER, f"no mode {p.mode} (0 metering, 1 test, 2 shop)")
    old = meter_mode(meter)
    if p.mode == old:
        return Result(ResultCode.COMPLETED)
    if old in _MODE_EVENTS:
        meter.log_event(_MODE_EVENTS[old][1].number, 0, ctx.now, ctx.user_id)
    meter.subsystem("mode")["mode"] = p.mode
    meter.dirty = True
    if p.mode in _MODE_EVENTS:
        meter.log_event(_MODE_EVENTS[p.mode][0].number, 0, ctx.now, ctx.user_id)
    return Result(ResultCode.COMPLETED)


declare(
    ep(35), "Change Test Mode",
    execute=_OPTICAL_AND_HEAD_END,  # a meter shop's action: not for a MEP client
    params=_EP35,
    run=_change_mode,
    provenance=designed("the modes are ANSI C12.19's (BT03.0 metering, test, meter shop; OPG "
                        "p.45) and events 30/31 the Echelon guide's test mode; " + _SLOT +
                        "; the UINT8 mode is ours"),
)

# ---------------------------------------------------------------------------------------
# EP42 Execute Self Check

#: Response bit -> the BT03 alarm that is the fault condition
SELF_CHECK_FAULTS = ("ram_failure", "rom_failure", "nvm_failure", "clock_error",
                     "measurement_error", "software_crc_error")
_EP42_RESPONSE = Struct("faults" / Bits(1, **{name: bit for bit, name in
                                              enumerate(SELF_CHECK_FAULTS)}))


def _self_check(meter, p, ctx) -> Result:
    """EP42: check the meter's fault conditions (BT03 RAM, ROM, NVM failure, clock error,
    measurement error, software CRC error). BT08 answers them as bits 0..5; if any is set,
    event 38 Self Check Error Detected is logged with those bits (EP29 counts such checks)."""
    faults = sum(1 << bit for bit, name in enumerate(SELF_CHECK_FAULTS)
                 if name in meter.state.alarms)
    if faults:
        meter.log_event(events.SELF_CHECK_ERROR.number, faults, ctx.now, ctx.user_id)
        meter.count("self_check_errors")
    return Result(ResultCode.COMPLETED, bytes([faults]))


declare(
    ep(42), "Execute Self Check",
    execute=CONFIGURERS,
    params=Struct(),
    response=_EP42_RESPONSE,
    run=_self_check,
    provenance=designed("event 38 'Self Check Error Detected' (ANSI C12.19; OSGP slides) needs a "
                        "trigger; " + _SLOT + "; response bits ours"),
)

# ---------------------------------------------------------------------------------------
# EP43 Acknowledge Prepay Warning


def _acknowledge_prepay_warning(meter, p, ctx) -> Result:
    """EP43: the customer acknowledged the prepay credit warning: raises BT03 Prepay Warning
    Acknowledged and logs event 85 (once, until EP03 clears the bit)."""
    conditions.begin(meter, "prepay_warning_acknowledged", ctx.now, 0, ctx.user_id)
    return Result(ResultCode.COMPLETED)


declare(
    ep(43), "Acknowledge Prepay Warning",
    execute=CONFIGURERS,
    params=Struct(),
    run=_acknowledge_prepay_warning,
    provenance=designed("BT03 'Prepay Warning Acknowledged' (OPG p.46) and its event need a "
                        "trigger; " + _SLOT + "; no parameters"),
)
