"""Console progress bar and the tray's percentage text."""

from __future__ import annotations

import io

from agent.progress import ConsoleProgress, fan_out, percent, render_bar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_percent_and_bar() -> None:
    assert percent(50, 200) == 25
    assert percent(5, None) is None and percent(5, 0) is None
    assert percent(300, 200) == 100
    bar = render_bar("rt", 1024 * 1024, 4 * 1024 * 1024, width=8)
    assert bar == "rt [##......]  25%  1.0 MiB/4.0 MiB"
    assert render_bar("rt", 2 * 1024 * 1024, None) == "rt 2.0 MiB"


def test_console_progress_on_tty_redraws_one_line() -> None:
    out = Tty()
    p = ConsoleProgress("dl", out)
    for done in range(0, 101, 1):
        p(done, 100)
    p.finish()
    text = out.getvalue()
    assert text.count("\r") == 101 and text.endswith("\n")
    assert "100%" in text


def test_console_progress_on_pipe_prints_every_ten_percent() -> None:
    out = io.StringIO()
    p = ConsoleProgress("dl", out)
    for done in range(0, 1001):
        p(done, 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("dl [") and "100%" in lines[-1]


def test_fan_out() -> None:
    seen: list[tuple[str, int, int | None]] = []
    cb = fan_out(lambda d, t: seen.append(("a", d, t)), None, lambda d, t: seen.append(("b", d, t)))
    cb(1, 2)
    assert seen == [("a", 1, 2), ("b", 1, 2)]
