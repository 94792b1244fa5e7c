"""The collector pause of bulk work: nested and concurrent pauses end together, state restored."""

from __future__ import annotations

import gc
import threading

from fhirlake.gc_pause import gc_paused


def test_pauses_nest_and_restore_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_concurrent_pauses_end_with_the_last_one() -> None:
    inside, release = threading.Barrier(2), threading.Event()

    def worker() -> None:
        with gc_paused():
            inside.wait()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    with gc_paused():
        inside.wait()
    assert not gc.isenabled()  # the other thread's pause is still on
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
