"""An Idempotency-Key retry is recognised by what the request means: JSON in a canonical
form (key order and white space do not matter), MIME byte for byte."""

from __future__ import annotations

import hashlib
import json

from secumail.api.idempotency import canonical_body, matches, request_digest

MSG = {"from": "a@hospital.test", "to": ["dr@clinic.test"], "subject": "Lab", "text": "é"}
JSON = "application/json"


def test_reordered_and_reformatted_json_is_the_same_request() -> None:
    first = json.dumps(MSG).encode()
    retry = json.dumps(dict(reversed(MSG.items())), indent=4, ensure_ascii=True).encode()
    assert first != retry
    assert request_digest(JSON, first) == request_digest(JSON, retry)
    assert matches(request_digest(JSON, first), JSON, retry)
    assert canonical_body(JSON, retry) == (
        '{"from":"a@hospital.test","subject":"Lab","text":"é","to":["dr@clinic.test"]}'.encode()
    )


def test_other_content_is_another_request() -> None:
    first = json.dumps(MSG).encode()
    for changed in (
        {**MSG, "subject": "Lab 2"},
        {**MSG, "to": list(reversed(["dr@clinic.test", "x@clinic.test"]))},
        {**MSG, "to": ["dr@clinic.test", "x@clinic.test"]},
    ):
        assert not matches(request_digest(JSON, first), JSON, json.dumps(changed).encode())
    # the order of a list is content: recipients in another order are another request
    two = {**MSG, "to": ["a@clinic.test", "b@clinic.test"]}
    swapped = {**MSG, "to": ["b@clinic.test", "a@clinic.test"]}
    assert request_digest(JSON, json.dumps(two).encode()) != request_digest(
        JSON, json.dumps(swapped).encode()
    )


def test_mime_is_compared_byte_for_byte() -> None:
    mime = b"From: a@hospital.test\r\nTo: dr@clinic.test\r\n\r\nhi\r\n"
    ctype = "message/rfc822"
    assert matches(request_digest(ctype, mime), ctype, mime)
    assert not matches(request_digest(ctype, mime), ctype, mime.replace(b"hi", b"hi "))
    # the same bytes as another media type are another request
    assert not matches(request_digest(ctype, mime), JSON, mime)


def test_a_key_stored_before_the_canonical_form_still_matches_its_exact_retry() -> None:
    raw = json.dumps(MSG, indent=2).encode()
    legacy = hashlib.sha256(JSON.encode() + b"\0" + raw).hexdigest()
    assert matches(legacy, JSON, raw)


def test_a_body_that_is_not_json_is_compared_as_bytes() -> None:
    assert canonical_body(JSON, b"{not json") == b"{not json"
    assert not matches(request_digest(JSON, b"{not json"), JSON, b"{not  json")
