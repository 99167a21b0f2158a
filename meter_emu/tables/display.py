"""LCD display tables: the display dimensions (BT30), the primary and secondary display lists
(BT33, ET77), the per-item display format (ET07) and the display source ID mapping (ET67).

The tables hold configuration and show it back; the emulator has no LCD, so nothing acts on it
yet. ET77 exists on firmware 3.70+ only (OPG p.62) but is always declared: the catalog is one
table set for every firmware version (BT00's bitmaps derive from it).

OPG = Optical Port Programmer's Guide (OSGP Alliance, 2021), MEP = MEP Client Developer's Guide
(OSGP Alliance, 2022); printed page numbers.
"""

from __future__ import annotations

from construct import Array, Struct

from ..datatypes import UINT8, UINT16, Bits, Chars
from ..device.access import CONFIGURERS, READERS
from ..provenance import designed, documented
from .catalog import bt, declare, et, refuse
from .dimensions import firmware_at_least


# ---------------------------------------------------------------------------------------
# BT30 Dimension Display

#: BT30 product dimensions (MEP p.220-221): selectable display sources, items per list, lists.
DISPLAY_SOURCES = 962
PRIMARY_LIST_ITEMS = 30
PRIMARY_LISTS = 1

_BT30 = Struct(
    "flags" / Bits(1, on_time=0, off_time=1, hold_time=2),
    "display_sources" / UINT16,
    "width_display_sources" / UINT8,
    "primary_list_items" / UINT16,
    "primary_lists" / UINT8,
    "secondary_list_items" / UINT16,
    "secondary_lists" / UINT8,
)

declare(
    bt(30), "Dimension Display",
    read=READERS,
    layout=_BT30,
    render=lambda meter, now: dict(
        flags=dict(on_time=1),
        display_sources=DISPLAY_SOURCES,
        width_display_sources=2,
        primary_list_items=PRIMARY_LIST_ITEMS,
        primary_lists=PRIMARY_LISTS,
        secondary_list_items=0,  # BT30.7/.9 are "reserved for future use", ET77 or not
        secondary_lists=0,
    ),
    provenance=documented("MEP p.220-221; read access OPG p.60"),
)

# ---------------------------------------------------------------------------------------
# BT33 Primary Display List, ET77 Secondary Display List

#: On Time: 0 (advance by push button) or 6..15 seconds (MEP p.221).
ON_TIMES = frozenset({0, *range(6, 16)})
_NORMAL_LIST, _ALTERNATE_LIST = 1, 2  # C12.19 DEFAULT_LIST: normal, alternate display mode

_DISPLAY_LIST = Struct(
    "timing" / Bits(1, on_time=(0, 4), off_time=(4, 4)),
    "mode" / Bits(1, hold_time=(0, 4), default_list=(4, 4)),
    "number_list_items" / UINT8,
    "display_sources" / Array(PRIMARY_LIST_ITEMS, UINT16),
)


def _display_list(on_time: int, default_list: int, sources: list[int]) -> dict:
    return dict(
        timing=dict(on_time=on_time),
        mode=dict(default_list=default_list),
        number_list_items=len(sources),
        display_sources=sources + [0] * (PRIMARY_LIST_ITEMS - len(sources)),
    )


def _display_list_apply(label: str, table_id: int, layout, lists):
    """Checks a display list write; Off Time, Hold Time and Default List ("F"/"P") stay."""

    def apply(meter, values, ctx):
        kept = layout.parse(meter.table_bytes(table_id, ctx.now))
        for new, old in zip(lists(values), lists(kept)):
            if new.timing["on_time"] not in ON_TIMES:
                refuse(label, f"on time {new.timing['on_time']} s is not 0 or 6..15")
            if new.number_list_items > PRIMARY_LIST_ITEMS:
                refuse(label, f"{new.number_list_items} items; the list holds "
                               f"{PRIMARY_LIST_ITEMS} (BT30.4)")
            new.timing["off_time"] = old.timing["off_time"]
            new.mode = old.mode
        return values

    return apply


_BT33 = Struct("primary_display_lists" / Array(PRIMARY_LISTS, _DISPLAY_LIST))

declare(
    bt(33), "Primary Display List",
    read=READERS,
    write=CONFIGURERS,
    layout=_BT33,
    defaults=lambda meter: dict(primary_display_lists=[
        _display_list(on_time=6, default_list=_NORMAL_LIST, sources=[0x2000, 0x2001, 0x0000])
    ] * PRIMARY_LISTS),
    apply=_display_list_apply("BT33", bt(33), _BT33, lambda v: v.primary_display_lists),
    provenance=documented("MEP p.221-222 (ARRAY[BT30.6] of DispListDescRcd); OPG p.60"),
)

_ET77 = Struct("secondary_display_list" / _DISPLAY_LIST)

declare(
    et(77), "Secondary Display List",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET77,
    defaults=lambda meter: dict(secondary_display_list=_display_list(
        on_time=6, default_list=_ALTERNATE_LIST, sources=[])),
    apply=_display_list_apply("ET77", et(77), _ET77, lambda v: [v.secondary_display_list]),
    provenance=designed(
        "no public layout (OPG p.62 names it, MEP p.262 gives MAK write): one BT33 display list "
        "record of BT30.4 items; Number List Items is the ET77 entry count ET54.79 publishes "
        "(0 by default, MEP p.137)"
    ),
)

# ---------------------------------------------------------------------------------------
# ET07 LCD Display Configuration

#: ET42 "Accumulator Rollover Digit" (MEP p.119, root field ET07.BT30.4*6): decimal digits of
#: the energy registers before they roll over, 5..9; 9, so no register rolls over in practice.
ACCUMULATOR_ROLLOVER_DIGITS = 9
_ROLLOVER_RANGE = range(5, 10)


def _id_code_length(meter) -> int:
    """Display ID codes: 4 characters, 5 on Gen 4 meters (firmware 4.0+), as in ET55/ET62."""
    return 5 if firmware_at_least(meter, "4.0") else 4


def _et07_layout(meter):
    item = Struct(
        "id_code" / Chars(_id_code_length(meter)),
        "id_dp_state" / UINT8,
        "data_format" / Bits(1, fields_after_dp=(0, 3), fields_before_dp=(3, 4),
                             zero_suppression=7),
    )
    return Struct(
        "display_items" / Array(PRIMARY_LIST_ITEMS, item),
        "accumulator_rollover_digit" / UINT8,
    )


def _et07_defaults(meter):
    """Blank ID codes and 6-digit integer values with leading zeros hidden, for every item."""
    item = dict(id_code="", id_dp_state=0,
                data_format=dict(fields_after_dp=0, fields_before_dp=6, zero_suppression=1))
    return dict(display_items=[item] * PRIMARY_LIST_ITEMS,
                accumulator_rollover_digit=ACCUMULATOR_ROLLOVER_DIGITS)


def _et07_apply(meter, values, ctx):
    """The limits ET62's identical display format record documents (MEP p.171)."""
    dp_bits = _id_code_length(meter)
    for i, item in enumerate(values.display_items):
        fmt = item.data_format
        if not 1 <= fmt["fields_before_dp"] <= 8 or fmt["fields_after_dp"] > 3:
            refuse("ET07", f"item {i}: {fmt['fields_before_dp']} digits before the decimal "
                            f"point (1..8) and {fmt['fields_after_dp']} after (0..3)")
        if fmt["fields_before_dp"] + fmt["fields_after_dp"] > 8:
            refuse("ET07", f"item {i}: more than 8 digits")
        if item.id_dp_state >> dp_bits:
            refuse("ET07", f"item {i}: decimal point state uses more than {dp_bits} bits")
    if values.accumulator_rollover_digit not in _ROLLOVER_RANGE:
        refuse("ET07", f"accumulator rollover digit {values.accumulator_rollover_digit} is not "
                        "5..9")


declare(
    et(7), "LCD Display Configuration",
    read=READERS,
    write=CONFIGURERS,
    layout=_et07_layout,
    defaults=_et07_defaults,
    apply=_et07_apply,
    provenance=designed(
        "no public layout: dimensioned by BT30 (MEP p.55), the rollover digit at BT30.4*6 (ET42, "
        "MEP p.119) implies one 6-byte record per list item, taken as ET62's ID code, decimal "
        "point state and data format (MEP p.171)"
    ),
)

# ---------------------------------------------------------------------------------------
# ET67 Display Source ID Mapping

_ET67 = Struct("extended_source_ids" / Array(PRIMARY_LIST_ITEMS, UINT16))

declare(
    et(67), "Display Source ID Mapping",
    read=READERS,
    write=CONFIGURERS,
    layout=_ET67,
    defaults=lambda meter: dict(extended_source_ids=[0] * PRIMARY_LIST_ITEMS),
    provenance=designed(
        "no public layout: dimensioned by BT30 (MEP p.55); ET66's mapping (MEP p.173: UINT16 "
        "extended source IDs) with one entry per display list item (BT30.4); MAK write MEP p.261"
    ),
)
