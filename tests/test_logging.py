"""``keyplane.logging_config``: one JSON object per line, with key material redacted."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import logging.config
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.api import observe
from keyplane.api.observe import Observer
from keyplane.domain import keyformat
from keyplane.domain.keyformat import KeyKind
from keyplane.logging_config import (
    JsonFormatter,
    LoopBatchedStreamHandler,
    iso_utc,
    line_writer,
    logging_config,
    redact,
)

KEYS = {
    "live": keyformat.generate(KeyKind.LIVE).text,
    "test": keyformat.generate(KeyKind.TEST).text,
    "mgmt": keyformat.generate(KeyKind.MANAGEMENT).text,
    "custom prefix": keyformat.generate(KeyKind.LIVE, "sk-fr").text,
    "custom test prefix": keyformat.generate(KeyKind.TEST, "acme_corp").text,
    "longest prefix": keyformat.generate(KeyKind.MANAGEMENT, "a" * 16).text,
}
KEY_IDS = list(KEYS)
ALL_KEYS = list(KEYS.values())


def body_of(key: str) -> str:
    """The secret part of a key: everything after ``<prefix>_<kind>_``."""
    return key.rpartition("_")[2]


def assert_no_key(text: str, key: str) -> None:
    assert key not in text
    assert body_of(key) not in text
    # Not even a long stretch of the secret part may survive.
    assert body_of(key)[8:24] not in text


@pytest.fixture(params=KEY_IDS)
def key(request: pytest.FixtureRequest) -> str:
    value: str = KEYS[request.param]
    return value


# -- redact -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{}",
        "key={}",
        "presented key {} was revoked",
        '{{"key": "{}"}}',
        "GET /v1/keys/{} HTTP/1.1",
        "/v1/verify?key={}&x=1",
        "'{}'",
        "({})",
        "<{}>",
        "key:\t{}\n",
        "first {} then again {}",
    ],
)
def test_redact_masks_keys_wherever_they_appear(template: str, key: str) -> None:
    text = template.format(key, key) if template.count("{}") == 2 else template.format(key)
    redacted = redact(text)
    assert_no_key(redacted, key)
    assert "[REDACTED]" in redacted


def test_redact_keeps_a_recognisable_start(key: str) -> None:
    redacted = redact(f"key={key}")
    prefix_and_kind = key[: len(key) - len(body_of(key))]
    assert redacted.startswith("key=" + prefix_and_kind[:12])
    assert redacted.endswith("[REDACTED]")


def test_redact_masks_every_key_in_one_text() -> None:
    text = " ".join(ALL_KEYS) + "\n" + ",".join(ALL_KEYS)
    redacted = redact(text)
    for key in ALL_KEYS:
        assert_no_key(redacted, key)


@pytest.mark.parametrize(
    "template",
    [
        "GET /v1/keys?next=%2Fverify%3Fkey%3D{} HTTP/1.1",  # percent-encoded query
        "Authorization=Bearer%20{}",
        "ID7{}",
    ],
)
def test_redact_masks_keys_glued_to_preceding_text(template: str, key: str) -> None:
    redacted = redact(template.format(key))
    assert_no_key(redacted, key)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
        ("authorization: bearer sometoken0123456789", "sometoken0123456789"),
        ("header was 'BEARER   tok/with+chars=='", "tok/with+chars=="),
        ("Bearer root-key-for-tests-xxxxxxxxxxxxxxxxxxxxxxxx", "root-key-for-tests-"),
    ],
)
def test_redact_masks_bearer_tokens(text: str, token: str) -> None:
    redacted = redact(text)
    assert token not in redacted
    assert "[REDACTED]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Application startup complete.",
        '127.0.0.1:50412 - "POST /v1/verify HTTP/1.1" 200',
        "key key_01JQ7ZK6V7ZB3Q0Y9G2W8H5N4M created in proj_01jq7zk6v7zb3q0y9g2w8h5n4m",
        "hash 3f5a0c2e9b7d41a8c6e2f0b9d8a7c6e5f4d3c2b1a09f8e7d6c5b4a3f2e1d0c9b",
        "kp_live_tooShort and kp_test_ and kp_mgmt_",
        "the live_test_mgmt words, café, 日本語, emoji 🎉, tabs\tand\nnewlines",
        "status=REVOKED code=NOT_FOUND scopes=['keys:read', 'verify']",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


# -- JsonFormatter ----------------------------------------------------------------------------


def make_record(
    msg: str,
    *args: object,
    level: int = logging.INFO,
    exc_info: Any = None,
    extra: dict[str, Any] | None = None,
) -> logging.LogRecord:
    logger = logging.getLogger("keyplane.test")
    return logger.makeRecord(
        logger.name, level, __file__, 1, msg, args, exc_info, extra=extra or {}
    )


def formatted(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry: dict[str, Any] = json.loads(line)
    return entry


def test_format_is_one_json_object_with_the_standard_fields() -> None:
    entry = formatted(make_record("hello %s", "world", level=logging.WARNING))
    assert entry["msg"] == "hello world"
    assert entry["level"] == "warning"
    assert entry["logger"] == "keyplane.test"
    assert entry["ts"].endswith("+00:00")


def test_format_keeps_a_multiline_message_on_one_line() -> None:
    line = JsonFormatter().format(make_record("first\nsecond\r\nthird"))
    assert "\n" not in line
    assert "\r" not in line
    assert json.loads(line)["msg"] == "first\nsecond\r\nthird"


def test_format_redacts_keys_in_the_message(key: str) -> None:
    entry = formatted(make_record("verify failed for %s", key))
    assert_no_key(json.dumps(entry), key)
    assert entry["msg"].startswith("verify failed for ")


def test_format_redacts_keys_in_a_multiline_message(key: str) -> None:
    line = JsonFormatter().format(make_record("body:\n%s\n", key))
    assert_no_key(line, key)


def test_format_redacts_bearer_tokens_in_the_message() -> None:
    entry = formatted(make_record("headers: %r", {"authorization": "Bearer s3cr3t-t0ken"}))
    assert "s3cr3t-t0ken" not in json.dumps(entry)


def test_format_redacts_keys_in_string_extra_fields(key: str) -> None:
    entry = formatted(make_record("request", extra={"presented": key, "path": f"/v1/{key}"}))
    line = json.dumps(entry)
    assert_no_key(line, key)
    assert entry["presented"].endswith("[REDACTED]")


def test_format_redacts_keys_in_nested_extra_fields(key: str) -> None:
    extra = {
        "request": {"headers": {"authorization": f"Bearer {key}"}, "keys": [key, (key, 1)]},
        "keys": (key,),
        "key_set": {key},
    }
    line = JsonFormatter().format(make_record("request", extra=extra))
    assert_no_key(line, key)
    entry = json.loads(line)
    assert entry["request"]["keys"][1][1] == 1


def test_format_redacts_keys_in_extra_fields_that_are_not_json(key: str) -> None:
    class Opaque:
        def __str__(self) -> str:
            return f"Opaque({key})"

    line = JsonFormatter().format(make_record("request", extra={"thing": Opaque()}))
    assert_no_key(line, key)
    assert "Opaque(" in line


def test_format_keeps_non_string_extra_fields() -> None:
    entry = formatted(
        make_record("m", extra={"count": 3, "ratio": 0.5, "ok": True, "none": None, "ids": [1]})
    )
    assert (entry["count"], entry["ratio"], entry["ok"], entry["none"], entry["ids"]) == (
        3,
        0.5,
        True,
        None,
        [1],
    )


def test_format_redacts_keys_in_exception_text(key: str) -> None:
    try:
        raise ValueError(f"could not verify {key}")
    except ValueError:
        record = make_record("request failed", level=logging.ERROR, exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert_no_key(line, key)
    entry = json.loads(line)
    assert "ValueError: could not verify " in entry["exc"]
    assert "Traceback" in entry["exc"]


def test_format_redacts_keys_in_chained_exception_text(key: str) -> None:
    try:
        try:
            raise KeyError(key)
        except KeyError as inner:
            raise RuntimeError("lookup failed") from inner
    except RuntimeError:
        record = make_record("oops", level=logging.ERROR, exc_info=sys.exc_info())
    assert_no_key(JsonFormatter().format(record), key)


def test_format_redacts_bearer_tokens_in_exception_text() -> None:
    try:
        raise PermissionError("rejected header Authorization: Bearer hunter2hunter2")
    except PermissionError:
        record = make_record("denied", level=logging.ERROR, exc_info=sys.exc_info())
    assert "hunter2hunter2" not in JsonFormatter().format(record)


def test_format_leaves_ordinary_text_alone() -> None:
    text = '127.0.0.1:50412 - "POST /v1/keys HTTP/1.1" 201'
    entry = formatted(make_record("%s", text, extra={"note": "nothing secret here"}))
    assert entry["msg"] == text
    assert entry["note"] == "nothing secret here"


# -- logging_config: the real handler chain ---------------------------------------------------


@pytest.fixture
def captured_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    names = ("keyplane", "uvicorn", "uvicorn.access", "uvicorn.error")
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    logging.config.dictConfig(logging_config("debug"))
    try:
        yield stream
    finally:
        for name, (handlers, level, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


def test_configured_loggers_write_one_redacted_json_object_per_line(
    captured_stderr: io.StringIO,
) -> None:
    key = KEYS["custom prefix"]
    logging.getLogger("keyplane.services").debug("created %s", key)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", f"/v1/keys/{key}", "1.1", 404
    )
    logging.getLogger("uvicorn.error").info("multi\nline\nmessage")
    try:
        raise RuntimeError(key)
    except RuntimeError:
        logging.getLogger("keyplane.api").exception("boom")

    output = captured_stderr.getvalue()
    assert_no_key(output, key)
    lines = output.splitlines()
    assert len(lines) == 4
    entries = [json.loads(line) for line in lines]
    assert [e["logger"] for e in entries] == [
        "keyplane.services",
        "uvicorn.access",
        "uvicorn.error",
        "keyplane.api",
    ]
    assert entries[0]["level"] == "debug"
    assert entries[2]["msg"] == "multi\nline\nmessage"
    assert "RuntimeError" in entries[3]["exc"]


def test_logging_config_sets_the_level() -> None:
    config = logging_config("warning")
    assert {logger["level"] for logger in config["loggers"].values()} == {"WARNING"}


# -- LoopBatchedStreamHandler: one write per turn of the event loop ---------------------------


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def batched(stream: CountingStream) -> LoopBatchedStreamHandler:
    handler = LoopBatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("keyplane.test", level, __file__, 0, message, (), None)


async def test_lines_put_on_a_loop_are_written_together_when_its_turn_ends() -> None:
    stream = CountingStream()
    handler = batched(stream)
    for n in range(3):
        handler.put(f"line {n}\n")
    assert stream.writes == []  # kept until this turn of the loop is over
    await asyncio.sleep(0)
    assert stream.writes == ["line 0\nline 1\nline 2\n"]
    handler.put("next turn\n")
    await asyncio.sleep(0)
    assert stream.writes[1:] == ["next turn\n"]


async def test_a_record_is_written_at_once_after_the_kept_lines() -> None:
    # Records (startup, shutdown, warnings) are never held: a process killed right after
    # one (uvicorn raises the signal it caught again, once shut down) has written it.
    stream = CountingStream()
    handler = batched(stream)
    handler.put("first\n")
    handler.put("second\n")
    handler.handle(record("Application shutdown complete."))
    assert stream.getvalue() == "first\nsecond\nApplication shutdown complete.\n"
    await asyncio.sleep(0)
    assert stream.getvalue() == "first\nsecond\nApplication shutdown complete.\n"


async def test_lines_put_later_are_rendered_when_written_in_their_place() -> None:
    stream = CountingStream()
    handler = batched(stream)
    rendered: list[str] = []

    def render(n: int, text: str) -> str:
        rendered.append(text)
        return f"{text} {n}\n"

    handler.put("first\n")
    handler.put_later(render, 2, "second")
    handler.put("third\n")
    assert rendered == []  # not while answering: when the turn's lines are written
    await asyncio.sleep(0)
    assert rendered == ["second"]
    assert stream.writes == ["first\nsecond 2\nthird\n"]
    handler.put_later(render, 4, "fourth")
    handler.handle(record("a record"))  # written at once, after the kept line
    assert stream.getvalue().endswith("third\nfourth 4\na record\n")


def test_lines_put_later_off_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    handler = batched(stream)
    handler.put_later("{}\n".format, "one")
    assert stream.writes == ["one\n"]


def test_lines_put_off_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    handler = batched(stream)
    handler.put("one\n")
    handler.put("two\n")
    assert stream.writes == ["one\n", "two\n"]


async def test_flush_writes_the_kept_lines() -> None:
    # What logging.shutdown does at exit, should the loop stop before its turn ends.
    stream = CountingStream()
    handler = batched(stream)
    handler.put("kept\n")
    handler.flush()
    assert stream.getvalue() == "kept\n"


@contextlib.contextmanager
def uncaptured() -> Iterator[None]:
    """Without the handlers pytest adds to capture logs (during the test's call)."""
    keyplane = logging.getLogger("keyplane")
    added = [h for h in keyplane.handlers if not isinstance(h, LoopBatchedStreamHandler)]
    for handler in added:
        keyplane.removeHandler(handler)
    try:
        yield
    finally:
        for handler in added:
            keyplane.addHandler(handler)


def test_the_configured_handler_takes_finished_lines(captured_stderr: io.StringIO) -> None:
    with uncaptured():
        writer = line_writer(logging.getLogger("keyplane.access"))
    assert isinstance(writer, LoopBatchedStreamHandler)
    writer.put("a finished line\n")
    assert captured_stderr.getvalue() == "a finished line\n"


@pytest.mark.usefixtures("captured_stderr")
def test_finished_lines_are_not_taken_past_a_filter_or_another_handler() -> None:
    access = logging.getLogger("keyplane.access")
    assert line_writer(access) is None  # pytest's own capture handlers are on the way
    with uncaptured():
        _assert_not_taken_past_a_filter_or_another_handler(access)


def _assert_not_taken_past_a_filter_or_another_handler(access: logging.Logger) -> None:
    assert line_writer(access) is not None
    dropping = logging.Filter("nothing")
    access.addFilter(dropping)
    try:
        assert line_writer(access) is None
    finally:
        access.removeFilter(dropping)
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger("keyplane").addHandler(other)
    try:
        assert line_writer(access) is None
    finally:
        logging.getLogger("keyplane").removeHandler(other)
    handler = logging.getLogger("keyplane").handlers[0]
    handler.setFormatter(logging.Formatter("%(message)s"))
    assert line_writer(access) is None
    assert line_writer(logging.getLogger("elsewhere")) is None


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_iso_utc_is_datetimes_isoformat(created: float) -> None:
    assert iso_utc(created) == datetime.fromtimestamp(created, UTC).isoformat()
    whole = float(int(created))
    assert iso_utc(whole) == datetime.fromtimestamp(whole, UTC).isoformat()


def test_the_access_line_put_directly_is_the_line_its_record_gives(
    captured_stderr: io.StringIO,
) -> None:
    observer = Observer(access_log=True)
    scope: dict[str, Any] = {"method": "POST", "headers": [], "route": _Route('/v1/k"{x}')}
    access = observer.begin(scope)
    access.principal_id = "mk_01"
    with uncaptured():
        observer.end(scope, access, 201, 0.0123456)  # the line put directly
        other = io.StringIO()
        second = logging.StreamHandler(other)
        second.setFormatter(JsonFormatter())
        logging.getLogger("keyplane").addHandler(second)
        try:
            observer.end(scope, access, 201, 0.0123456)  # the record, through both handlers
        finally:
            logging.getLogger("keyplane").removeHandler(second)
    direct, through_handler = captured_stderr.getvalue().splitlines()
    assert json.loads(through_handler) == json.loads(other.getvalue())
    one, two = json.loads(direct), json.loads(through_handler)
    assert datetime.fromisoformat(one.pop("ts")) <= datetime.fromisoformat(two.pop("ts"))
    assert one == two
    assert one["msg"] == 'POST /v1/k"{x} 201' and one["latency_ms"] == 12.346


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_the_direct_lines_latency_is_the_value_the_record_gives(elapsed: float) -> None:
    # The direct line writes the milliseconds with %.3f; the record's holds round(ms, 3).
    known = observe._Labelled(None, '"GET /healthz 200"', '"/healthz"')
    line = observe._access_line(1.5, known, "req", "GET", 200, elapsed, None)
    assert json.loads(line)["latency_ms"] == round(elapsed * 1000, 3)
