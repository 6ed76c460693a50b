"""Rows <-> records in the SQLite store: how it writes times and flags; the rest is
scepd/store/rows.py, shared with the PostgreSQL store.

Times are fixed-width ISO-8601 UTC text, so SQL string comparison orders them
like time; flags are integers. The role modules import every column list and
row conversion from here, so they only write SQL.
"""

from __future__ import annotations

import datetime as dt

from scepd.store.rows import CERTIFICATE_COLUMNS as CERTIFICATE_COLUMNS
from scepd.store.rows import NOTIFICATION_COLUMNS as NOTIFICATION_COLUMNS
from scepd.store.rows import PENDING_COLUMNS as PENDING_COLUMNS
from scepd.store.rows import PENDING_INSERT_COLUMNS as PENDING_INSERT_COLUMNS
from scepd.store.rows import REVOCATION_COLUMNS as REVOCATION_COLUMNS
from scepd.store.rows import RowCodec, aware_utc
from scepd.store.rows import decode_serial as decode_serial
from scepd.store.rows import encode_serial as encode_serial


def encode_time(when: dt.datetime) -> str:
    """Fixed-width ISO-8601 UTC, so SQL string comparison orders like time."""
    return aware_utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


ROWS = RowCodec(encode_time=encode_time, decode_time=decode_time, encode_flag=int)
certificate_row = ROWS.certificate_row
certificate_record = ROWS.certificate_record
pending_insert_row = ROWS.pending_insert_row
pending_record = ROWS.pending_record
notification_row = ROWS.notification_row
notification_record = ROWS.notification_record
revocation_record = ROWS.revocation_record
