"""How a GET PKIOperation's `message` is decoded (scepd.http.app.decode_get_message): every way real
clients write base64 into a query string comes back as the same bytes."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scepd.http.app import BadRequest, decode_get_message


def received(query_value: str) -> str:
    """What the handler sees for `message=<query_value>` once the query string is form-decoded."""
    return parse_qs("message=" + query_value, keep_blank_values=True)["message"][0]


@given(st.binary(min_size=1, max_size=300))
def test_every_spelling_of_the_same_bytes_decodes_to_them(data: bytes) -> None:
    b64 = base64.b64encode(data).decode()
    spellings = [
        quote(b64, safe=""),  # escaped, as a careful client sends it
        b64,  # unescaped: '+' arrives as a space, wherever it stands
        base64.urlsafe_b64encode(data).decode().rstrip("="),  # URL-safe alphabet, padding dropped
        b64 + "\r\n",  # a line end pasted in
    ]
    for spelling in spellings:
        assert decode_get_message(received(spelling)) == data, spelling


@pytest.mark.parametrize("data", [b"\xfb\xef\xbe", b"\xfb\xef\xbe" * 5, b"\x00\x0f\xbe"])
def test_an_unescaped_plus_at_either_end_is_kept(data: bytes) -> None:
    """These encode to text that ends (or starts and ends) with '+': a space after form decoding."""
    b64 = base64.b64encode(data).decode()
    assert b64.endswith("+")
    assert received(b64).endswith(" ")
    assert decode_get_message(received(b64)) == data


def test_what_is_not_base64_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        decode_get_message("not*base64")
