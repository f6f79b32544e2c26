"""Stopping `thinktrace.execution.drive` on Ctrl-C: the calls in flight finish and are handled, and the user is told
why the stop waits for them."""

import threading
import time

import pytest

from thinktrace.execution.pools import ThreadPool, drive


def test_an_interrupt_keeps_the_calls_in_flight_and_says_it_waits_for_them(capsys):
    release = threading.Event()
    running = threading.Barrier(3, timeout=5)  # units 0, 1 and 2 are all running before unit 0's result is handled

    def task(lms, unit):
        if unit < 3:
            running.wait()
        if unit:  # every unit but the first waits until the interrupt has been raised
            release.wait(5)
        return unit * 10

    handled = []

    def handle(unit, result):
        handled.append(result)
        if unit == 0:
            release.set()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(ThreadPool(task, {}, threads=3), [0, 1, 2, 3, 4], handle)
    assert sorted(handled) == [0, 10, 20]  # the two in flight were journalled; the queued ones were dropped
    assert "stopping: waiting for the 2 calls in flight" in capsys.readouterr().err


def test_a_plain_error_stops_without_the_message(capsys):
    def task(lms, unit):
        time.sleep(0.01)
        return unit

    def handle(unit, result):
        raise RuntimeError("endpoint down")

    with pytest.raises(RuntimeError):
        drive(ThreadPool(task, {}, threads=2), [0, 1], handle)
    assert "stopping" not in capsys.readouterr().err
