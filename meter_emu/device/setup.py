"""What a fresh meter has lived through before it starts: the profile's ``[demand]``,
``[mbus]`` and ``[mep]`` set-up, carried out once, when a meter starts with no saved state.

Why: a worked example (MEP p.48) is a meter with a history -- demand configured, an M-Bus
device commissioned, a MEP client registered, on-demand reads served. Each is made here by the
code a live meter runs for it, so the tables show it the way they show it at run time:

* ``[demand]``: the settings EP32 stores and the ET48 sources, as the meter left the factory
  (before its interface definition is first recorded, so no IDT change is reported), plus the
  two settings EP32 has no field for: BT21.8 present demands and the BT13 reset exclusion
  (the demand reset lockout, procedures/metering.py);
* ``[mbus] devices``: the simulated devices on the meter's bus, then auto-discovery
  (device/mbus.py) commissions them into ET14;
* ``[mep] client_handle``: MEP client 1's ET50 "MEP Device Registered" write (MAK) and the
  discovery that installs it in ET14 with that handle;
* ``[mep] on_demand_history``: EP19 billing reads (optical port, MK) in order, each answered
  before the next: by the M-Bus master reading the device, or by the MEP client's EP39 post
  (on-demand, success, no data). They end before the start instant.
"""

from __future__ import annotations

from ..events import USER_NONE
from ..tables import mep_devices
from ..tables.catalog import WriteContext, et
from .access import Key
from . import mbus

EP19, EP39 = 2048 + 19, 2048 + 39
_MEP_CLIENT_1 = range(1000, 2000)
_DEVICE_KEYS = {"address": int, "serial": str, "manufacturer": str, "version": int,
                "medium": int, "volume_l": int, "flow_l_per_h": float, "status": int}
_DEVICE_DEFAULTS = dict(version=1, medium=mbus.WATER, volume_l=0, flow_l_per_h=0.0, status=0)


def check(origin: str, d: dict) -> None:
    """Profile checks for the sections this module carries out (ProfileError names the key)."""
    from ..profile import ProfileError

    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ProfileError(f"profile {origin}: {key} {message}")

    demand = d["demand"]
    need(0 <= demand["self_reads"] <= 253, "demand.self_reads", "must be 0..253 (BT20.2)")
    need(len(demand["sources"]) <= 8 and all(isinstance(s, int) and 0 <= s <= 255
                                             for s in demand["sources"]),
         "demand.sources", "must list at most 8 source IDs (0..255)")
    interval = demand["sub_interval_minutes"] * demand["interval_multiplier"]
    need(1 <= demand["sub_interval_minutes"] <= 60 and 60 % demand["sub_interval_minutes"] == 0
         and 1 <= interval <= 60 and 60 % interval == 0, "demand.sub_interval_minutes",
         "x interval_multiplier must give minutes dividing 60")
    need(0 <= demand["reset_exclusion_minutes"] <= 255, "demand.reset_exclusion_minutes",
         "must be 0..255 (BT13.0)")
    addresses = set()
    for i, device in enumerate(d["mbus"]["devices"]):
        key = f"mbus.devices[{i}]"
        need(isinstance(device, dict), key, "must be a table")
        unknown = set(device) - set(_DEVICE_KEYS)
        need(not unknown, key, f"has unknown keys {sorted(unknown)} (known: "
                               f"{', '.join(_DEVICE_KEYS)})")
        need({"address", "serial", "manufacturer"} <= set(device), key,
             "needs address, serial and manufacturer")
        for name, kind in _DEVICE_KEYS.items():
            value = device.get(name)
            if kind is float and isinstance(value, int):
                value = float(value)
            need(value is None or type(value) is kind, f"{key}.{name}", f"must be {kind.__name__}")
        need(device["address"] in mbus.ADDRESSES and device["address"] not in addresses,
             f"{key}.address", "must be a primary address 1..250, one device each")
        addresses.add(device["address"])
        need(device["serial"].isdigit() and len(device["serial"]) <= 8, f"{key}.serial",
             "must be at most 8 decimal digits")
        need(len(device["manufacturer"]) == 3 and device["manufacturer"].isalpha()
             and device["manufacturer"].isascii(), f"{key}.manufacturer", "must be 3 letters")
        for name in ("version", "medium", "status"):
            need(0 <= device.get(name, 0) <= 255, f"{key}.{name}", "must be 0..255")
        need(device.get("volume_l", 0) >= 0 and device.get("flow_l_per_h", 0) >= 0,
             f"{key}.volume_l", "and flow_l_per_h must not be negative")
    mep = d["mep"]
    need(mep["client_handle"] == 0 or mep["client_handle"] in _MEP_CLIENT_1, "mep.client_handle",
         "must be 0 (none) or a MEP client 1 handle, 1000..1999")
    for i, item in enumerate(mep["on_demand_history"]):
        need(isinstance(item, list) and len(item) == 2
             and all(isinstance(v, int) and 0 <= v <= 0xFFFF for v in item),
             f"mep.on_demand_history[{i}]", "must be [transaction number, device handle]")


def configure(meter) -> None:
    """``[demand]``, before the meter first records its interface definition (Meter.__init__)."""
    from ..metering import demand as engine
    from ..tables import registers

    settings = meter.profile.demand
    if not settings.configured:
        return
    state = registers.billing_state(meter, registers.DEMAND)
    state.update(configured=True, bidn=0, self_reads=settings.self_reads,
                 sub_interval=settings.sub_interval_minutes,
                 interval_multiplier=settings.interval_multiplier,
                 present_demands=settings.present_demands,
                 reset_exclusion=settings.reset_exclusion_minutes)
    if settings.sources:
        _write_demand_sources(meter, settings.sources)
    engine.ensure_sources(meter)


def _write_demand_sources(meter, sources) -> None:
    """ET48 as a configuring client writes it: one maximum demand per source."""
    from ..tables import CATALOG
    from ..tables.registers import NO_COINCIDENT

    layout = CATALOG[et(48)].layout_for(meter)
    values = layout.parse(meter.table_bytes(et(48), 0.0))
    for entry, source in zip(values.entries, sources):
        entry.flags = dict(configured=1, maximum=1)
        entry.source = source
        entry.coincident_sources = [NO_COINCIDENT, NO_COINCIDENT]
    meter.state.tables[et(48)] = layout.build(values)
    meter.dirty = True


def live(meter, now: float) -> None:
    """``[mbus]`` and ``[mep]``: the bus, discovery, registration and the served requests,
    dated so that the last one is over at ``now``."""
    from ..metering import demand as engine

    profile = meter.profile
    devices = [dict(_DEVICE_DEFAULTS, **doc) for doc in profile.mbus.devices]
    history = profile.mep.on_demand_history
    if meter.profile.demand.configured:
        engine.reconfigure(meter, now)
    if not devices and not profile.mep.client_handle and not history:
        return
    step = mbus.exchange_seconds(300) + 1.0  # longer than any one exchange
    at = now - step * (len(history) + 1)
    if devices:
        mbus.connect(meter, devices, at)
        mbus.discover(meter, at)
    if profile.mep.client_handle:
        _register_client(meter, profile.mep.client_handle, at)
    for transaction, handle in history:
        at += step
        _serve_history(meter, transaction, handle, at, step)


def _register_client(meter, handle: int, now: float) -> None:
    port = f"{meter.id} mep"
    meter.write_table(et(50), b"\x01", WriteContext(Key.MAK, now, USER_NONE, port), 30)
    mep_devices.register(meter, mep_devices.mep_slot(meter, 1), now, handle=handle)


def _run(meter, number: int, params: bytes, key: Key, now: float, port: str):
    from ..procedures import PROCEDURES, ResultCode

    proc = PROCEDURES[number]
    result = proc.run(meter, proc.params.parse(params), WriteContext(key, now, USER_NONE, port))
    if result.code != ResultCode.COMPLETED:
        raise ValueError(f"{proc.label} answered {result.code}")


def _serve_history(meter, transaction: int, handle: int, now: float, step: float) -> None:
    """One EP19 billing read from the optical port, then its answer."""
    from ..procedures.catalog import ProcedureFailed
    from ..profile import ProfileError

    params = (transaction.to_bytes(2, "little") + handle.to_bytes(2, "little")
              + bytes([mep_devices.BILLING_READ]))
    try:
        _run(meter, EP19, params, Key.MK, now, f"{meter.id} optical")
        slot = mep_devices.slot_of(meter, handle)
        if mep_devices.slot_channel(meter, slot) is None:
            mbus.run_due(meter, now + step / 2)
        else:  # the MEP client answers: an on-demand post, success, no data
            _run(meter, EP39, bytes([1, mep_devices.SUCCESS, 0, 0]), Key.MAK, now + step / 2,
                 f"{meter.id} mep")
    except (ProcedureFailed, ValueError) as exc:
        raise ProfileError(f"profile {meter.profile.origin}: mep.on_demand_history "
                           f"[0x{transaction:X}, {handle}] cannot be served: {exc}") from None
