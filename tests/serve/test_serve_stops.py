"""Stop sequences over text that arrives piece by piece (no model needed)."""

from __future__ import annotations

import pytest

from serve._llama_cpp import _StopScanner


def run(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    scanner = _StopScanner(stops)
    shown: list[str] = []
    for piece in pieces:
        text, stopped = scanner.feed(piece)
        shown.append(text)
        if stopped:
            return shown, True
    shown.append(scanner.flush())
    return shown, False


def test_no_stops_passes_text_through() -> None:
    assert run([], ["ab", "c"]) == (["ab", "c", ""], False)


def test_stop_inside_one_piece_cuts_there() -> None:
    assert run(["END"], ["abcENDxyz"]) == (["abc"], True)


def test_stop_split_across_pieces_is_never_shown() -> None:
    shown, stopped = run(["END"], ["ab", "cE", "N", "Dzz"])

    assert stopped
    assert "".join(shown) == "abc"
    assert all("E" not in text for text in shown)


def test_held_back_prefix_is_released_when_it_is_not_a_stop() -> None:
    shown, stopped = run(["END"], ["abE", "Nx"])

    assert not stopped
    assert shown == ["ab", "ENx", ""]


def test_prefix_held_at_the_end_is_flushed() -> None:
    shown, stopped = run(["END"], ["abEN"])

    assert not stopped
    assert shown == ["ab", "EN"]


@pytest.mark.parametrize(
    ("stops", "text", "expected"),
    [(["cd", "b"], "abcd", "a"), (["\n\n", "\n"], "x\n\ny", "x"), (["xy", "y"], "xyz", "")],
)
def test_earliest_stop_wins(stops: list[str], text: str, expected: str) -> None:
    shown, stopped = run(stops, [text])

    assert stopped
    assert "".join(shown) == expected
