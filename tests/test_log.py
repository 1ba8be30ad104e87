"""Logging: structlog lines on stderr, and no structlog at all until a line is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )


def test_structlog_loads_with_the_first_line_written() -> None:
    done = run(
        """
        import sys
        from igrun.core.log import configure, get_logger
        configure(verbose=False)
        log = get_logger(gadget="trace exec").bind(run=1)
        log.debug("below the level")
        print("structlog" in sys.modules)
        log.warning("lost_events", count=3)
        print("structlog" in sys.modules)
        """
    )
    assert done.stdout.split() == ["False", "True"]
    (line,) = done.stderr.splitlines()
    assert line.endswith("[warning] lost_events count=3 gadget='trace exec' run=1")


def test_verbose_writes_debug_lines_and_structlog_methods_still_work() -> None:
    done = run(
        """
        from igrun.core.log import configure, get_logger
        configure(verbose=True)
        log = get_logger(gadget="g")
        log.debug("loading", step=1)
        log.new(other=2).info("fresh")  # a structlog method the wrapper does not define
        """
    )
    lines = done.stderr.splitlines()
    assert lines[0].endswith("[debug] loading gadget=g step=1")
    assert lines[1].endswith("[info] fresh other=2")


def test_values_and_tracebacks_are_escaped() -> None:
    """Event-derived text in a log line steers nothing: plain values are escaped, quoted ones
    are shown as their repr, and a traceback keeps its lines but not its controls."""
    done = run(
        r"""
        from igrun.core.log import configure, get_logger
        configure(verbose=False)
        log = get_logger(gadget="trace exec")
        log.warning("container_added\x1b[2J", name="web\x1b[2J\u202e", image="a b\r\n\x1b[H")
        try:
            raise ValueError("bad\x1b]0;title\x07")
        except ValueError:
            log.error("failed", exc_info=True)
        """
    )
    first, *rest = done.stderr.splitlines()
    assert first.endswith(
        r"[warning] container_added\x1b[2J gadget='trace exec' image='a b\r\n\x1b[H' "
        r"name=web\x1b[2J\u202e"
    )
    assert rest[-1] == r"ValueError: bad\x1b]0;title\x07"
    assert not [c for c in done.stderr if c < " " and c != "\n"]


def test_lines_from_several_threads_never_run_into_each_other() -> None:
    """The runs of a config log from threads of their own, and their first lines (their
    ``ready`` lines, without ``-v``) come at about the same moment, when structlog is set up
    with the first line written: each thread could set it up with a writer and a lock of its
    own. Setting it up again before every line makes that moment frequent here; every line
    still comes whole."""
    done = run(
        """
        import sys, threading
        from igrun.core.log import configure, get_logger
        configure(verbose=False)
        get_logger().info("first")  # structlog set up before the threads start
        start = threading.Barrier(4)

        def lines(n):
            start.wait()
            for i in range(300):
                configure(verbose=False)  # structlog is set up again with the next line
                get_logger(run=n).info("ready", gadget="trace exec", line=i)

        threads = [threading.Thread(target=lines, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        """
    )
    lines = done.stderr.splitlines()[1:]
    assert len(lines) == 1200
    for line in lines:
        assert line.count("[info] ready gadget='trace exec' line=") == 1, line
