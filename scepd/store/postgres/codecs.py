"""Rows <-> records in the PostgreSQL store: how it writes times and flags; the rest is
scepd/store/rows.py, shared with the SQLite store.

Times are timestamptz (microseconds, like Python's datetime), handed over as
aware datetimes and read back in UTC; flags are booleans. The role modules
import every column list and row conversion from here, so they only write SQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from scepd.store.rows import CERTIFICATE_COLUMNS as CERTIFICATE_COLUMNS
from scepd.store.rows import NOTIFICATION_COLUMNS as NOTIFICATION_COLUMNS
from scepd.store.rows import PENDING_COLUMNS as PENDING_COLUMNS
from scepd.store.rows import PENDING_INSERT_COLUMNS as PENDING_INSERT_COLUMNS
from scepd.store.rows import REVOCATION_COLUMNS as REVOCATION_COLUMNS
from scepd.store.rows import RowCodec, aware_utc
from scepd.store.rows import decode_serial as decode_serial
from scepd.store.rows import encode_serial as encode_serial


def encode_time(when: dt.datetime) -> dt.datetime:
    """The same instant in UTC (timestamptz keeps the instant; UTC keeps what is read back alike)."""
    return aware_utc(when)


def decode_time(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def placeholders(row: tuple[Any, ...]) -> str:
    return ", ".join(["%s"] * len(row))


ROWS = RowCodec(encode_time=encode_time, decode_time=decode_time, encode_flag=bool)
certificate_row = ROWS.certificate_row
certificate_record = ROWS.certificate_record
pending_insert_row = ROWS.pending_insert_row
pending_record = ROWS.pending_record
notification_row = ROWS.notification_row
notification_record = ROWS.notification_record
revocation_record = ROWS.revocation_record
