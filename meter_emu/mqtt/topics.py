"""The emulator's MQTT topics (DESIGN.md section 5), without any I/O.

``route`` says what an incoming message means: a list of ``Action`` items, each either work for
meters (set quantities, set one quantity, fire a trigger) or a rejection to publish on an error
topic. ``perform`` carries one out on one meter. The bridge (bridge.py) only moves bytes.

Topics under the profile's ``[mqtt] prefix`` (default ``meter-emu``):

=================================== ===================================================
``<prefix>/<meter>/set``            JSON object of quantities (``quantities.apply``)
``<prefix>/<meter>/set/<q>[/<ph>]`` a plain number or JSON generator for quantity q,
                                    every phase or phase 1..3 (``quantities.apply_one``)
``<prefix>/all/set``                JSON object for every meter
``<prefix>/group/<name>/set``       JSON object for the meters whose ``[mqtt] groups``
                                    list the group
``<prefix>/batch``                  ``{"<meter>": {...}, ...}``: one object per meter
``<prefix>/<meter>/trigger/<name>`` an event trigger; payload empty, 1/true/on (begins) or
                                    0/false/off (ends)
=================================== ===================================================

Published: ``<prefix>/<meter>/state`` (JSON), ``/event`` (one JSON per logged event),
``/info`` (retained), ``/error`` (``{"topic", "error"}`` for a rejected message) and
``<prefix>/error`` for what names no meter (an unknown meter, a fleet payload that is not
JSON). A meter called ``all`` is shadowed by the fleet topic.
"""

from __future__ import annotations

import json
import itertools
from dataclasses import dataclass

from ..device import relay
from ..metering import quantities
from ..metering import registers, triggers

SET, SET_ONE, TRIGGER, REJECT = "set", "set_one", "trigger", "reject"
#: the summations 6 and 7 are computed (Fwd+Rev, Fwd-Rev); named here for the state document
COMPUTED_NAMES = {6: "fwd_plus_rev_active_wh", 7: "fwd_minus_rev_active_wh"}


@dataclass(slots=True)
class Action:
    """One thing an incoming message asks for.

    ``key`` says which pending action a newer one replaces (latest value per topic; a batch
    entry per batch and meter); None for actions that must never be merged (triggers)."""

    kind: str
    topic: str  # the message's topic, named in error reports
    meters: tuple = ()
    key: object = None
    values: dict | None = None
    name: str = ""  # the quantity (SET_ONE) or the trigger (TRIGGER)
    phase: int | None = None
    text: str = ""
    error: str = ""
    error_topic: str = ""


def subscriptions(prefix: str) -> list[str]:
    """What the bridge subscribes to. ``+/set/+`` and ``+/set/+/+`` rather than ``+/set/#``:
    ``#`` also matches ``.../set`` itself, and brokers may deliver a message that matches two
    filters twice."""
    return [f"{prefix}/+/set", f"{prefix}/+/set/+", f"{prefix}/+/set/+/+",
            f"{prefix}/group/+/set", f"{prefix}/batch", f"{prefix}/+/trigger/+"]


def meter_topic(prefix: str, meter_id: str, kind: str) -> str:
    """``<prefix>/<meter>/<kind>`` for state, event, info and error."""
    return f"{prefix}/{meter_id}/{kind}"


def groups_of(meters) -> dict[str, list]:
    """Group name -> its meters, from each profile's ``[mqtt] groups``."""
    groups: dict[str, list] = {}
    for meter in meters:
        for name in meter.profile.mqtt.groups:
            groups.setdefault(name, []).append(meter)
    return groups


def _reject(topic: str, error_topic: str, error: str) -> Action:
    return Action(REJECT, topic, error=error, error_topic=error_topic)


def _json_object(payload: bytes, what: str):
    """The payload as a JSON object, or an error text."""
    if not payload:
        return None, f"empty payload; {what} takes a JSON object"
    try:
        value = json.loads(payload)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return None, f"not valid JSON ({exc}); {what} takes a JSON object"
    if not isinstance(value, dict):
        return None, f"{what} takes a JSON object, not {type(value).__name__}"
    return value, None


def _text(payload: bytes) -> tuple[str | None, str | None]:
    try:
        return payload.decode("utf-8").strip(), None
    except UnicodeDecodeError:
        return None, "the payload is not UTF-8 text"


def route(topic: str, payload: bytes, prefix: str, meters_by_id: dict,
          groups: dict[str, list], *, shard: bool = False) -> list[Action]:
    """What a message on ``topic`` means. Never raises: a message that cannot be used becomes
    a REJECT action naming the error topic (the meter's, or ``<prefix>/error``). ``shard``:
    other processes serve the rest of the fleet on the same broker (``--shards``), so a meter
    not here is theirs: its messages are left alone, not refused."""
    fleet_errors = f"{prefix}/error"
    if not topic.startswith(prefix + "/"):
        return [_reject(topic, fleet_errors, f"topic is not under the prefix {prefix!r}")]
    levels = topic[len(prefix) + 1:].split("/")
    head = levels[0]
    if levels == ["batch"]:
        return _route_batch(topic, payload, prefix, meters_by_id, shard)
    if len(levels) == 2 and levels[1] == "set" and head == "all":
        return _route_fleet(topic, payload, prefix, tuple(meters_by_id.values()), "all/set")
    if len(levels) == 3 and head == "group" and levels[2] == "set":
        members = groups.get(levels[1])
        if not members and shard:
            return []  # the group's meters are in other shards
        if not members:
            return [_reject(topic, fleet_errors, f"no meter is in group {levels[1]!r}")]
        return _route_fleet(topic, payload, prefix, tuple(members), "a group's set topic")
    meter = meters_by_id.get(head)
    if meter is None and shard and head not in ("all", "group"):
        return []  # another shard's meter
    if meter is None:
        known = ", ".join(itertools.islice(meters_by_id, 10))
        return [_reject(topic, fleet_errors, f"unknown meter {head!r} (known: {known})")]
    errors = meter_topic(prefix, head, "error")
    if len(levels) >= 2 and levels[1] == "set":
        if len(levels) == 2:
            values, error = _json_object(payload, "a meter's set topic")
            if error:
                return [_reject(topic, errors, error)]
            return [Action(SET, topic, (meter,), topic, values)]
        return [_route_one(topic, payload, meter, levels, errors)]
    if len(levels) == 3 and levels[1] == "trigger" and levels[2]:
        text, error = _text(payload)
        if error:
            return [_reject(topic, errors, error)]
        return [Action(TRIGGER, topic, (meter,), None, name=levels[2], text=text)]
    return [_reject(topic, errors, "not a topic the emulator handles (set, set/<quantity>"
                                   "[/<phase>], trigger/<name>)")]


def _route_one(topic: str, payload: bytes, meter, levels: list[str], errors: str) -> Action:
    """``<meter>/set/<quantity>[/<phase>]``."""
    if len(levels) > 4 or not levels[2]:
        return _reject(topic, errors, "expected <meter>/set/<quantity>[/<phase>]")
    phase = None
    if len(levels) == 4:
        phases = meter.profile.meter.phases
        text = levels[3]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= phases:
            return _reject(topic, errors,
                           f"phase {text!r} does not exist on a {phases}-phase meter")
        phase = int(text)
    text, error = _text(payload)
    if error:
        return _reject(topic, errors, error)
    if not text:
        return _reject(topic, errors, "empty payload; expected a number")
    return Action(SET_ONE, topic, (meter,), topic, name=levels[2], phase=phase, text=text)


def _route_fleet(topic: str, payload: bytes, prefix: str, members: tuple,
                 what: str) -> list[Action]:
    values, error = _json_object(payload, what)
    if error:
        return [_reject(topic, f"{prefix}/error", error)]
    return [Action(SET, topic, members, topic, values)]


def _route_batch(topic: str, payload: bytes, prefix: str, meters_by_id: dict,
                 shard: bool = False) -> list[Action]:
    """One SET per meter; a bad entry is rejected on its own and never stops the others; in
    a shard, entries for meters not here are another shard's."""
    batch, error = _json_object(payload, "the batch topic")
    if error:
        return [_reject(topic, f"{prefix}/error", error + ' ({"<meter>": {...}, ...})')]
    actions = []
    for meter_id, values in batch.items():
        meter = meters_by_id.get(meter_id)
        if meter is None:
            if not shard:
                actions.append(_reject(topic, f"{prefix}/error",
                                       f"batch: unknown meter {meter_id!r}"))
        elif not isinstance(values, dict):
            actions.append(_reject(topic, meter_topic(prefix, meter_id, "error"),
                                   f"batch entry for {meter_id}: expected a JSON object of "
                                   f"quantities, not {type(values).__name__}"))
        else:
            actions.append(Action(SET, topic, (meter,), (topic, meter_id), values))
    return actions


def perform(action: Action, meter, now: float) -> int:
    """Carry out ``action`` on ``meter`` at virtual time ``now``; returns how many quantity
    settings changed. Raises ``quantities.InjectionError`` (nothing changed) for a payload
    the meter cannot use."""
    kind = action.kind
    if kind == SET:
        return len(quantities.apply(meter, action.values, now))
    if kind == SET_ONE:
        quantities.apply_one(meter, action.name, action.phase, action.text, now)
        return 1
    if kind == TRIGGER:
        triggers.fire(meter, action.name, action.text, now)
        return 0
    raise ValueError(f"perform() got a {kind} action")


def error_document(action: Action) -> bytes:
    return json.dumps({"topic": action.topic, "error": action.error}).encode()


# ---- documents the emulator publishes -----------------------------------------------------

def register_names(count: int) -> list[tuple[int, str]]:
    """(source ID, name) of the first ``count`` BT23 summations, in BT22 order."""
    return [(source, registers.NAMES.get(source) or COMPUTED_NAMES[source])
            for source in registers.SUMMATION_SOURCES[:count]]


def state_document(meter, now: float, summary=None) -> dict:
    """What ``<prefix>/<meter>/state`` carries: the meter time, the quantity settings, the BT23
    totals, the TOU tier in force, the BT03 alarms raised, the switches (``relay``: contactor
    state and reason of its last change, control relays, maximum power level and threshold,
    tripped, prepay credit); ``summary`` (the engine's
    ``summary(meter, now)``, when it has one) adds its keys, e.g. the powers."""
    from ..metering import tou

    document = {
        "id": meter.id,
        "time": meter.utc(now).isoformat() + "Z",
        "quantities": quantities.settings_document(meter, now),
        "registers": {name: registers.value(meter, source)
                      for source, name in register_names(meter.dims.summations)},
        "tier": tou.current_tier(meter, now),
        "alarms": sorted(meter.state.alarms),
        "relay": relay.summary(meter),
    }
    if summary is not None:
        for key, value in summary(meter, now).items():
            document.setdefault(key, value)
    return document


def info_document(meter, ports: dict | None = None) -> dict:
    """The retained ``<prefix>/<meter>/info``: who the meter is and where to reach it."""
    profile = meter.profile
    prefix = profile.mqtt.prefix
    identity = profile.identity
    return {
        "id": meter.id,
        "profile": profile.origin,
        "phases": profile.meter.phases,
        "serial_number": identity.serial_number,
        "firmware_version": identity.firmware_version,
        "ports": dict(ports or {}),
        "groups": list(profile.mqtt.groups),
        "quantities": sorted([*quantities.QUANTITIES, *quantities.ALIASES]),
        "topics": {
            "set": meter_topic(prefix, meter.id, "set"),
            "set_one": meter_topic(prefix, meter.id, "set/<quantity>[/<phase>]"),
            "trigger": meter_topic(prefix, meter.id, "trigger/<name>"),
            "groups": [f"{prefix}/group/{name}/set" for name in profile.mqtt.groups],
            **{kind: meter_topic(prefix, meter.id, kind)
               for kind in ("state", "event", "info", "error")},
        },
    }
