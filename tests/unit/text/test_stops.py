"""smg.text.stops.StopMatcher: which stop wins, hidden vs visible, stop token ids,
bounded hold-back, and split invariance (hypothesis)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smg.text.stops import StopMatcher, StopStep


def oracle(text: str, stops: list[str], visible: set[str]) -> tuple[str, str | None]:
    """The whole-text answer: the stop completing first, then the one starting first."""
    best = None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0:
            key = (i + len(s), i)
            if best is None or key < best[0]:
                best = (key, s)
    if best is None:
        return text, None
    (end, start), s = best
    return text[: end if s in visible else start], s


def run_chunks(m: StopMatcher, chunks: list[str]) -> tuple[str, str | int | None, bool]:
    out = []
    for c in chunks:
        step = m.feed(c)
        out.append(step.emit)
        assert len(m.held) <= max([len(s) for s in m._stops] or [1]) - 1
        if step.stopped:
            break
    out.append(m.flush())
    return "".join(out), m.matched, m.stopped


ALPHABET = st.sampled_from(["a", "b", "c", "😀", "中", "\n", " "])
TEXT = st.lists(ALPHABET, max_size=40).map("".join)
STOP = st.lists(ALPHABET, min_size=0, max_size=4).map("".join)


def chunk(text: str, cuts: list[int]) -> list[str]:
    points = [0, *sorted(set(c for c in cuts if 0 < c < len(text))), len(text)]
    return [text[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=400, deadline=None)
@given(text=TEXT, stops=st.lists(STOP, max_size=4), include=st.booleans(),
       visible=st.lists(STOP, max_size=2), cuts=st.lists(st.integers(0, 40), max_size=40))
def test_split_invariance_against_whole_text(text, stops, include, visible, cuts):
    m = StopMatcher(stops, include_stop_str_in_output=include, visible_stop_strings=visible)
    all_stops = list(stops) + list(visible)
    vis = set(visible) | (set(stops) if include else set())
    expected_text, expected_stop = oracle(text, all_stops, vis)
    got_text, got_stop, stopped = run_chunks(m, chunk(text, cuts))
    assert (got_text, got_stop) == (expected_text, expected_stop)
    assert stopped == (expected_stop is not None)


def test_first_to_complete_wins_over_first_listed():
    m = StopMatcher(["abcd", "bc"])
    steps = [m.feed(c) for c in "xabcd"]
    assert steps[0] == StopStep("x", False, None)
    assert steps[3] == StopStep("a", True, "bc")
    assert steps[4] == StopStep("", True, "bc")  # after a stop nothing more comes out


def test_same_end_prefers_the_longer_stop():
    m = StopMatcher(["bc", "abc"])
    assert m.feed("zabc") == StopStep("z", True, "abc")


def test_hidden_and_visible():
    assert StopMatcher(["</s>"]).feed("hi</s>tail") == StopStep("hi", True, "</s>")
    assert StopMatcher(["</s>"], include_stop_str_in_output=True).feed("hi</s>tail") == StopStep(
        "hi</s>", True, "</s>"
    )
    m = StopMatcher(["STOP"], visible_stop_strings=["END"])
    assert m.feed("a END b STOP") == StopStep("a END", True, "END")


def test_hold_back_is_only_a_possible_stop_start():
    m = StopMatcher(["<|im_end|>"])
    assert m.feed("Hello <|im") == StopStep("Hello ", False, None)
    assert m.held == "<|im"
    # Not a stop after all: released with the next text.
    assert m.feed("age|>") == StopStep("<|image|>", False, None)
    assert m.held == ""
    assert m.feed("x <|im_e") == StopStep("x ", False, None)
    assert m.feed("nd|> rest") == StopStep("", True, "<|im_end|>")


def test_hold_back_bound_and_flush():
    m = StopMatcher(["aaaa"])
    assert m.feed("baaa") == StopStep("b", False, None)
    assert m.held == "aaa"  # max(len(stop)) - 1
    assert m.flush() == "aaa"
    assert m.flush() == "" and not m.stopped


def test_stop_strings_across_multibyte_chunks():
    m = StopMatcher(["😀中"])
    out = [m.feed(c) for c in ["ok 😀", "中", "never"]]
    assert out[0] == StopStep("ok ", False, None)
    assert out[1] == StopStep("", True, "😀中")


def test_no_stop_strings_holds_nothing():
    m = StopMatcher([], stop_token_ids=[2])
    assert m.feed("<|im") == StopStep("<|im", False, None)
    assert m.held == "" and m.flush() == ""
    empty = StopMatcher(["", ""])
    assert empty.feed("abc") == StopStep("abc", False, None)


def test_stop_token_hidden_drops_it_and_what_follows():
    m = StopMatcher(["STOP"], stop_token_ids=[7, 9])
    assert m.feed_ids([1, 2]) == ([1, 2], None)
    assert not m.stopped
    assert m.feed_ids([3, 9, 4, 7]) == ([3], 9)
    assert m.stopped and m.matched == 9
    assert m.feed_ids([5]) == ([], None)
    # The kept ids' text still goes through the string matcher, then flush releases
    # what was held as a possible stop start.
    assert m.feed("tail ST") == StopStep("tail ", False, None)
    assert m.flush() == "ST"
    assert m.matched == 9


def test_stop_token_visible():
    m = StopMatcher([], stop_token_ids=[9], include_stop_str_in_output=True)
    assert m.feed_ids([1, 9, 2]) == ([1, 9], 9)
    v = StopMatcher([], stop_token_ids=[9], visible_stop_token_ids=[8])
    assert v.feed_ids([1, 8, 9]) == ([1, 8], 8)


def test_string_stop_in_kept_text_beats_token_stop():
    m = StopMatcher(["END"], stop_token_ids=[2])
    assert m.feed_ids([5, 6, 2]) == ([5, 6], 2)
    assert m.feed("x END y") == StopStep("x ", True, "END")
    assert m.matched == "END" and m.flush() == ""
