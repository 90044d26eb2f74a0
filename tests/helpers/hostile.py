"""A hostile producer's corpus: values meant to stop a consumer, each with the reason
the contract must give it. Every consumer of the topic is run against it."""

from __future__ import annotations

from ridematch_nb.contract.events import MAX_VALUE_BYTES, encode
from tests.helpers.samples import GOOD_DRIVER_UPDATE as GOOD

_GOOD = encode(GOOD)


def _with(raw_field: bytes, raw_value: bytes) -> bytes:
    """GOOD with one field's JSON text replaced verbatim (for text encode() cannot make)."""
    head, _, tail = _GOOD.partition(b'"' + raw_field + b'":')
    rest = tail[tail.index(b",") :] if b"," in tail else b"}"
    return head + b'"' + raw_field + b'":' + raw_value + rest


# name -> (raw value, reason)
HOSTILE: dict[str, tuple[bytes | None, str]] = {
    "tombstone": (None, "tombstone"),
    "empty": (b"", "not_json"),
    "whitespace": (b" \t ", "not_json"),
    "garbage": (b"<html>oops</html>", "not_json"),
    "invalid_utf8": (b'{"event_type":"driver_update","driver_id":"\xff\xfe"}', "not_json"),
    "invalid_utf8_in_field": (_with(b"driver_id", b'"d\x80"'), "not_json"),
    "truncated": (_GOOD[:-7], "not_json"),
    "two_objects": (_GOOD + b" " + _GOOD, "not_json"),
    "deep_array": (b"[" * 30_000 + b"]" * 30_000, "too_deep"),
    "deep_object": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "too_deep"),
    "deep_100k": (b"[" * 100_000 + b"]" * 100_000, "too_large"),
    "huge_value": (_GOOD[:-1] + b',"pad":"' + b"x" * MAX_VALUE_BYTES + b'"}', "too_large"),
    "nan": (_with(b"lat", b"NaN"), "not_json"),
    "infinity": (_with(b"accept_rate_7d", b"Infinity"), "not_json"),
    "minus_infinity": (_with(b"lon", b"-Infinity"), "not_json"),
    "overflow_float": (_with(b"lat", b"1e400"), "bad_field"),
    "int_4301_digits": (_with(b"avg_response_ms", b"9" * 4301), "not_json"),
    "int_400_digits": (_with(b"avg_response_ms", b"9" * 400), "bad_field"),
    "negative_huge_int": (_with(b"avg_response_ms", b"-" + b"9" * 30), "bad_field"),
    "duplicate_key": (_GOOD[:-1] + b',"lat":40.8}', "duplicate_field"),
    "duplicate_key_out_of_range": (_GOOD[:-1] + b',"lat":99.0}', "duplicate_field"),
    "array": (b"[1, 2, 3]", "not_an_object"),
    "string": (b'"driver_update"', "not_an_object"),
    "number": (b"42", "not_an_object"),
    "json_null": (b"null", "not_an_object"),
    "lone_surrogate": (_with(b"driver_id", b'"\\ud800"'), "bad_field"),
    "unknown_type": (encode({**GOOD, "event_type": "driver_teleport"}), "unknown_event_type"),
    "type_not_a_string": (encode({**GOOD, "event_type": ["driver_update"]}), "unknown_event_type"),
    "missing_field": (encode({k: v for k, v in GOOD.items() if k != "lat"}), "missing_field"),
    "null_field": (encode({**GOOD, "status": None}), "bad_field"),
    "bool_for_float": (encode({**GOOD, "lat": True}), "bad_field"),
    "object_for_string": (encode({**GOOD, "driver_id": {"$gt": ""}}), "bad_field"),
    "outside_new_york": (encode({**GOOD, "lat": 51.5, "lon": -0.12}), "out_of_range"),
    "naive_timestamp": (encode({**GOOD, "timestamp": "2026-10-05T12:00:00"}), "bad_timestamp"),
    "impossible_date": (encode({**GOOD, "timestamp": "2026-02-30T12:00:00Z"}), "bad_timestamp"),
    "newline_inside": (_GOOD.replace(b",", b",\n", 1) + b"\n" + _GOOD, "not_json"),
}

# Not hostile, but unusual: values the contract accepts (so the guards refuse no more
# than they must).
ACCEPTED: dict[str, bytes] = {
    "pretty_printed": _GOOD.replace(b",", b",\n  "),
    "extra_field": encode({**GOOD, "note": "hello"}),
    "whole_float_for_int": _with(b"avg_response_ms", b"900.0"),
    "escaped_quote_in_id": encode({**GOOD, "driver_id": 'driver_"1"'}),
}
