"""The meter's PLC security state: which mode secures its messages (ET04.127), its OMA keys (profile
or EP20) and how often they were used (ET54.82 / ET54.86 against ET04.123).

Documented (MEP p.65-66, p.137): ET04.127 Security Mode is 0 RC4 or 2 OSGP-AES-128-PSK and is the
meter's own (VCI "M": a client's write leaves it); ET04.123 Maximum Key Usage Count (default
1,000,000) bounds the uses of the unicast and the broadcast PLC key, *successful or failed*, which
ET54.82 / ET54.86 count; when either count reaches 80 % of it "this event will be generated".
Only the PLC keys count: the MEP and optical ports have their own keys.

Designed (the guides say no more):

* **Keys per slot and length.** A meter keeps, per slot (0 unicast, 1 broadcast), a 12-byte key
  (RC4 and the OMA digest, mode 0) and a 16-byte key (AES, mode 2); EP20 sets the one its
  length names, so a head-end can provision the AES key before it switches a meter to AES.
  ``oma_key`` answers the key of the current mode: EP20's, else the profile's ``[keys] oma``
  (for the broadcast slot of a fleet with per-meter keys, the fleet profile's own: fleet/keys.py)
  (which the profile checks against ``[security] mode``), else None (the mode was changed at run
  time before a key of its length was provisioned: nothing can authenticate).
* **The 80 % event** is event 108, whose argument's high byte says why it is logged: 0 EP20
  changed the key, 1 the key's usage reached 80 % (``USAGE_WARNING``); the low byte is the slot.
  Reusing 108 keeps the catalog at its 96 events. It is logged once per slot, with the PLC user
  ID (0xFFFE), until EP20 changes that slot's key in use, which also sets its count back to 0.
* **At the maximum** the meter goes on counting and accepting messages (the guide documents only
  the event; what a real meter refuses is not public); counts stop at 2^32-1 (UINT32).

Keys never reach a log line or a repr.
"""

from __future__ import annotations

from ..events import OMA_KEY_CHANGED, USER_PLC
from ..profile import SECURITY_MODES

RC4, AES_PSK = 0, 2  # ET04.127 Security Mode (MEP p.66)
UNICAST, BROADCAST = 0, 1
SLOTS = ("unicast", "broadcast")  # ET54.82, ET54.86
KEY_LENGTHS = {RC4: 12, AES_PSK: 16}
WARNING_PERCENT = 80  # MEP p.65
USAGE_WARNING = 0x0100  # event 108's argument: high byte 1 = usage reached WARNING_PERCENT
MAX_COUNT = 0xFFFFFFFF

FLEET_BROADCAST_OMA = "fleet_broadcast_oma"  # fleet/keys.py BROADCAST_OMA (no upward import)

_ET04 = 2048 + 4  # ET04 (catalog.et(4); not imported: the tables import this module)
_ET04_MAX_USAGE = 123  # UINT32, LSB first
_ET04_MODE = 127


def _et04(meter) -> bytes | None:
    """ET04 as stored, or None while it still has its profile defaults (no construct build on
    the per-message path)."""
    return meter.state.tables.get(_ET04)


def security_mode(meter) -> int:
    """ET04.127: RC4 (0) or OSGP-AES-128-PSK (2)."""
    raw = _et04(meter)
    return raw[_ET04_MODE] if raw is not None else SECURITY_MODES[meter.profile.security.mode]


def max_key_usage(meter) -> int:
    """ET04.123 Maximum Key Usage Count."""
    raw = _et04(meter)
    if raw is None:
        return meter.profile.security.max_key_usage_count
    return int.from_bytes(raw[_ET04_MAX_USAGE:_ET04_MAX_USAGE + 4], "little")


def _slot(slot: int) -> str:
    if slot not in (UNICAST, BROADCAST):
        raise ValueError(f"no OMA key slot {slot!r} (0 unicast, 1 broadcast)")
    return SLOTS[slot]


def provisioned_key(meter, slot: int, length: int) -> bytes | None:
    """The key of ``length`` bytes EP20 set in ``slot``, or None."""
    _slot(slot)
    stored = meter.state.subsystems.get("oma_keys", {})
    hexed = stored.get(f"{slot}/{length}")
    legacy = stored.get(str(slot))  # state saved before keys were kept per length
    if hexed is None and legacy is not None and len(legacy) == 2 * length:
        hexed = legacy
    return None if hexed is None else bytes.fromhex(hexed)


def oma_key(meter, slot: int = 0) -> bytes | None:
    """The OMA key in use: EP20's key for ``slot`` (0 unicast, 1 broadcast) or the profile's,
    of the length the security mode needs; None if there is none of that length."""
    length = KEY_LENGTHS.get(security_mode(meter))
    if length is None:  # 1 is reserved
        return None
    key = provisioned_key(meter, slot, length)
    if key is None and slot == BROADCAST and meter.profile.template:
        key = meter.profile.template.get(FLEET_BROADCAST_OMA)  # one key for all (fleet/keys.py)
    if key is None:
        key = meter.profile.oma_key()
    return key if len(key) == length else None


def set_oma_key(meter, slot: int, key: bytes) -> bool:
    """EP20: store ``key`` (12 or 16 bytes) in ``slot``. If it is the key the current mode uses,
    that slot's usage count and 80 % flag start again; returns whether they did."""
    name = _slot(slot)
    if len(key) not in KEY_LENGTHS.values():
        raise ValueError(f"an OMA key is 12 or 16 bytes, not {len(key)}")
    meter.subsystem("oma_keys")[f"{slot}/{len(key)}"] = bytes(key).hex()
    meter.subsystem("oma_keys").pop(str(slot), None)  # the legacy entry is superseded
    meter.dirty = True
    if len(key) != KEY_LENGTHS.get(security_mode(meter)):
        return False
    state = _usage_state(meter)
    state[name] = 0
    if name in state["warned"]:
        state["warned"].remove(name)
    return True


def _usage_state(meter) -> dict:
    return meter.subsystem("key_usage", unicast=0, broadcast=0, warned=[])


def count_use(meter, now: float, *, broadcast: bool = False) -> None:
    """One authenticated message under the unicast (or broadcast) key: ET54.82 (.86) + 1, with
    the ET04.123 limit and its event at 80 %. The PLC stack calls it for every message it tries
    to authenticate with the key, whether it succeeds or not (MEP p.65, p.137)."""
    slot = BROADCAST if broadcast else UNICAST
    name = SLOTS[slot]
    state = _usage_state(meter)
    count = min(state[name] + 1, MAX_COUNT)
    state[name] = count
    meter.dirty = True
    if name not in state["warned"] and count * 100 >= max_key_usage(meter) * WARNING_PERCENT:
        state["warned"].append(name)
        meter.log_event(OMA_KEY_CHANGED.number, USAGE_WARNING | slot, now, USER_PLC)


def usage(meter) -> tuple[int, int]:
    """(unicast, broadcast) key usage counts."""
    state = meter.state.subsystems.get("key_usage", {})
    return state.get("unicast", 0), state.get("broadcast", 0)
