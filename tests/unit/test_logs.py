"""aovisor.logs: loggers that reach :mod:`logging` unchanged, or not at all below the CLI's threshold."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from aovisor import logs


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    logs.reset()
    yield
    logs.reset()


def test_without_deferred_setup_every_record_reaches_logging(caplog: pytest.LogCaptureFixture) -> None:
    log = logs.get_logger("aovisor.test.logs")
    with caplog.at_level(logging.DEBUG, logger="aovisor"):
        log.debug("d %d", 1)
        log.info("i")
        log.warning("w")
        log.error("e")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("x")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("aovisor.test.logs", "DEBUG", "d 1"),
        ("aovisor.test.logs", "INFO", "i"),
        ("aovisor.test.logs", "WARNING", "w"),
        ("aovisor.test.logs", "ERROR", "e"),
        ("aovisor.test.logs", "ERROR", "x"),
    ]
    # The record names the caller, not aovisor/logs.py.
    test_name = "test_without_deferred_setup_every_record_reaches_logging"
    assert {r.funcName for r in caplog.records} == {test_name}
    assert caplog.records[-1].exc_info is not None and caplog.records[-1].exc_info[0] is RuntimeError


def test_below_the_threshold_nothing_is_set_up_and_the_first_record_above_sets_up_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setups: list[int] = []
    logs.defer_setup(logs.WARNING, lambda: setups.append(1))
    log = logs.get_logger("aovisor.test.deferred")
    with caplog.at_level(logging.DEBUG, logger="aovisor"):
        log.debug("dropped")
        log.info("dropped")
        assert not log.isEnabledFor(logs.INFO)
        assert setups == []
        log.warning("first")
        log.error("second")
    assert setups == [1]
    assert [r.getMessage() for r in caplog.records] == ["first", "second"]


def test_reset_forwards_every_level_again(caplog: pytest.LogCaptureFixture) -> None:
    logs.defer_setup(logs.ERROR, lambda: None)
    logs.reset()
    with caplog.at_level(logging.DEBUG, logger="aovisor"):
        logs.get_logger("aovisor.test.reset").debug("seen")
    assert [r.getMessage() for r in caplog.records] == ["seen"]
