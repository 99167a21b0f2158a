"""Product dimensions: the array sizes a real meter fixes at manufacture ("P" values in the
guides' VCI column). ET11 publishes most of them and BT50 the TOU ones; every table that is
dimensioned by them reads them here, so ET11/BT50 and the tables they describe never disagree.

Values follow the MEP guide's ET11 table (MEP p.77-80) and BT50 (MEP p.222-224) and depend on the
firmware version exactly where the guides say so. A profile may set ET11.7 where a real product
differs from its firmware's rule (``[dimensions] transaction_request_length``, checked in
profile.py): the guide's own meter reports 769 (its worked example, MEP p.47) and describes
ET52 as "a total of 769 bytes" (MEP p.129).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..datatypes import parse_version


@functools.lru_cache(maxsize=64)
def _firmware_of(text: str) -> tuple[int, int]:
    major, minor, _ = parse_version(text)
    return major, minor


@functools.lru_cache(maxsize=64)
def _threshold(version: str) -> tuple[int, int]:
    major, minor = (int(part) for part in version.split("."))
    return major, minor


def firmware(meter) -> tuple[int, int]:
    """The meter's firmware version as (major, minor), e.g. (3, 10) for 3.10.21 (parsed once
    per version string: every request asks)."""
    return _firmware_of(meter.profile.identity.firmware_version)


def firmware_at_least(meter, version: str) -> bool:
    """True when the firmware is ``version`` ("3.50") or newer: the guides add fields by version."""
    return _firmware_of(meter.profile.identity.firmware_version) >= _threshold(version)


@dataclass(frozen=True)
class ProductDimensions:
    # ET11 (MEP p.77-79; OPG p.40-42)
    devices: int  # ET11.0: MEP clients + M-Bus devices (5; 6 on firmware 4.0+)
    config_entry_size: int = 66  # ET11.1, ET13 entry
    status_entry_size: int = 36  # ET11.2, ET14 entry
    on_demand_queue_size: int = 5  # ET11.3, ET15 entries
    on_demand_entry_size: int = 6  # ET11.4, ET15 entry
    data_entry_size: int = 517  # ET11.5, ET16 entry
    transaction_request_length: int = 896  # ET11.7, ET52 (768 before firmware 3.50)
    transaction_response_length: int = 1785  # ET11.9, ET53
    on_demand_write_entry_size: int = 25  # ET11.11
    phase_measurement_size: int = 16  # ET11.12
    config2_entry_size: int = 22  # ET11.13, ET34 entry
    meter_otr_queue_size: int = 3  # ET11.14, ET19 entries (OPG p.41)
    mbus_otr_queue_size: int = 4  # ET11.15, ET20 entries (OPG p.41)
    meter_otr_entry_size: int = 17  # ET11.16 (OPG p.41)
    mbus_otr_entry_size: int = 17  # ET11.17 (OPG p.41)
    group_ids: int = 10  # ET11.18
    harmonics: int = 10  # ET11.19
    mbus_multicast_length: int = 65  # ET11.20
    et22_alarm_size: int = 120  # ET11.21
    mep_data_sources: int = 6  # ET11.22, ET50
    et48_entries: int = 10  # ET11.23
    critical_event_bitmaps: int = 10  # ET11.24
    et57_entries: int = 16  # ET11.25
    relay_switches: int = 80  # ET11.26, ET61 per control relay
    delta_alert_sources: int = 10  # ET11.27, ET71
    ram_transaction_request_length: int = 261  # ET11.28
    ram_transaction_response_length: int = 769  # ET11.30
    firmware_module_entries: int = 6  # ET11.32 (firmware 4.0+)
    firmware_module_entry_length: int = 7  # ET11.33
    mep_channels: int = 1  # ET11.34: MEP clients (2 on firmware 4.0+)
    verification_bitmap_size: int = 1250  # ET11.36, ET17
    error_screens: int = 3  # ET11.38 (firmware 4.20+ per the OPG; the MEP guide says 4.30)
    # BT50 (MEP p.222-224)
    seasons: int = 12  # 12 on firmware 3.50+, else 4
    special_schedules: int = 2
    non_recurring_dates: int = 25
    recurring_dates: int = 23
    tier_switches: int = 200


def product_dimensions(meter) -> ProductDimensions:
    return _dimensions(firmware(meter), meter.dims.transaction_request_length)


@functools.lru_cache(maxsize=64)
def _dimensions(version: tuple[int, int], request_length: int | None) -> ProductDimensions:
    gen4, v350 = version >= (4, 0), version >= (3, 50)
    return ProductDimensions(
        devices=6 if gen4 else 5,
        mep_channels=2 if gen4 else 1,
        transaction_request_length=request_length or (896 if v350 else 768),
        seasons=12 if v350 else 4,
    )
