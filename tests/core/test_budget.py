from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from autocompress.core.budget import METRICS, Budget, BudgetTerm, parse
from autocompress.core.errors import AutocompressError, BudgetError


def _only(text: str) -> BudgetTerm:
    parsed = parse(text)
    assert len(parsed.terms) == 1
    return parsed.terms[0]


# --------------------------------------------------------------------------- valid budgets


@pytest.mark.parametrize(
    "text, metric, value",
    [
        ("flops=0.3", "flops", 0.3),
        ("params=1", "params", 1.0),
        ("size=0.25", "size", 0.25),
        ("flops=.5", "flops", 0.5),
        ("flops=1e-1", "flops", 0.1),
        ("FLOPS=0.3", "flops", 0.3),
        ("  flops = 0.3  ", "flops", 0.3),
    ],
)
def test_plain_number_is_a_ratio_of_the_base_model(text, metric, value):
    term = _only(text)
    assert term.metric == metric
    assert term.relative is True
    assert term.value == pytest.approx(value)
    assert term.target is None


@pytest.mark.parametrize(
    "text, metric, value",
    [
        ("flops=120M", "flops", 120e6),
        ("flops=1.5G", "flops", 1.5e9),
        ("flops=2T", "flops", 2e12),
        ("params=50k", "params", 50e3),
        ("params=50K", "params", 50e3),
        ("params=3m", "params", 3e6),  # counts: m and M are both mega
    ],
)
def test_counts_with_units_are_absolute(text, metric, value):
    term = _only(text)
    assert term.metric == metric
    assert term.relative is False
    assert term.value == pytest.approx(value)
    assert term.target is None


@pytest.mark.parametrize(
    "text, value",
    [
        ("size=1.5MB", 1.5e6),  # decimal megabytes, not MiB
        ("size=2MiB", 2 * 1024**2),
        ("size=300kB", 300e3),
        ("size=4KiB", 4 * 1024),
        ("size=1GB", 1e9),
        ("size=1GiB", 1024**3),
        ("size=512B", 512.0),
        ("size=1.5mb", 1.5e6),  # size units are case-insensitive
    ],
)
def test_sizes_are_absolute_bytes(text, value):
    term = _only(text)
    assert term.metric == "size"
    assert term.relative is False
    assert term.value == pytest.approx(value)


@pytest.mark.parametrize(
    "text, value, relative, target",
    [
        ("latency=4ms@cpu", 4.0, False, "cpu"),
        ("latency=250us@jetson-orin-nano", 0.25, False, "jetson-orin-nano"),
        ("latency=1s@cpu", 1000.0, False, "cpu"),
        ("latency=0.5@cpu", 0.5, True, "cpu"),
        ("latency = 4ms @ cpu", 4.0, False, "cpu"),
    ],
)
def test_latency_is_in_milliseconds_or_relative_and_names_its_target(text, value, relative, target):
    term = _only(text)
    assert term.metric == "latency"
    assert term.value == pytest.approx(value)
    assert term.relative is relative
    assert term.target == target


def test_several_terms_comma_separated():
    parsed = parse("flops=0.3, params=50k,size=1.5MB ,latency=4ms@cpu")
    assert parsed.metrics == ("flops", "params", "size", "latency")
    assert [t.relative for t in parsed.terms] == [True, False, False, False]
    assert [t.value for t in parsed.terms] == pytest.approx([0.3, 50e3, 1.5e6, 4.0])


def test_several_terms_as_a_list_of_strings():
    parsed = parse(["flops=0.3", "params=50k,size=2MiB"])
    assert parsed.metrics == ("flops", "params", "size")
    assert parsed.terms[2].value == 2 * 1024**2
    assert parse(("flops=0.3", "params=50k")).metrics == ("flops", "params")


def test_empty_pieces_between_commas_are_ignored():
    assert parse("flops=0.3,,params=0.5,").metrics == ("flops", "params")


def test_latency_may_repeat_for_different_targets():
    parsed = parse("latency=4ms@cpu,latency=2ms@gpu")
    assert [(t.target, t.value) for t in parsed.terms] == [("cpu", 4.0), ("gpu", 2.0)]


@pytest.mark.parametrize(
    "text, base, limit",
    [
        ("flops=0.3", 1000.0, 300.0),
        ("params=0.5", 2e6, 1e6),
        ("latency=0.5@cpu", 8.0, 4.0),
        ("flops=120M", 1e9, 120e6),  # absolute: base is ignored
        ("flops=120M", 1.0, 120e6),
        ("size=1.5MB", 123.0, 1.5e6),
        ("latency=4ms@cpu", 100.0, 4.0),
    ],
)
def test_limit_scales_relative_terms_and_keeps_absolute_ones(text, base, limit):
    assert _only(text).limit(base) == pytest.approx(limit)


@pytest.mark.parametrize(
    "text",
    [
        "flops=0.3",
        "flops=120M",
        "params=50k",
        "flops=1.5G",
        "size=1.5MB",
        "size=2MiB",
        "size=300kB",
        "latency=4ms@cpu",
        "latency=0.5@cpu",
        "latency=250us@jetson-orin-nano",
        "flops=0.3, params=50k , latency=4ms @ cpu",
        ["flops=0.3", "size=1.5MB,latency=0.5@cpu"],
    ],
)
def test_str_round_trips_through_parse(text):
    parsed = parse(text)
    again = parse(str(parsed))
    assert again == parsed
    assert again.terms == parsed.terms
    assert parse(parsed.to_strings()) == parsed


def test_str_keeps_the_text_the_user_wrote():
    parsed = parse(" flops=0.3 ,params=50k")
    assert str(parsed) == "flops=0.3,params=50k"
    assert parsed.to_strings() == ["flops=0.3", "params=50k"]


@pytest.mark.parametrize(
    "term",
    [
        BudgetTerm("flops", 0.3, True),
        BudgetTerm("size", 1.5e6, False),
        BudgetTerm("latency", 4.0, False, "cpu"),
        BudgetTerm("latency", 0.5, True, "cpu"),
    ],
)
def test_str_of_a_constructed_term_parses_back_to_the_same_limit(term):
    again = _only(str(term))
    assert (again.metric, again.relative, again.target) == (term.metric, term.relative, term.target)
    assert again.value == pytest.approx(term.value)


@pytest.mark.parametrize(
    "term",
    [BudgetTerm("flops", 1.2e8, False), BudgetTerm("params", 5e4, False)],
    ids=["flops=120M", "params=50k"],
)
def test_str_of_a_constructed_absolute_count_term_parses_back(term):
    again = _only(str(term))
    assert (again.metric, again.relative) == (term.metric, term.relative)
    assert again.value == pytest.approx(term.value)


# --------------------------------------------------------------------------- invalid budgets


@pytest.mark.parametrize(
    "text, needle",
    [
        ("speed=0.3", "speed"),  # unknown metric
        ("flop=0.3", "flop"),
        ("accuracy=0.9", "accuracy"),
        ("flops=3", "flops=3"),  # ratio above 1
        ("size=1.5", "size=1.5"),
        ("latency=2@cpu", "latency=2@cpu"),
        ("flops=0", "flops=0"),  # zero and negative
        ("flops=0.0", "flops=0.0"),
        ("flops=-0.3", "flops=-0.3"),
        ("params=-50k", "params=-50k"),
        ("latency=-4ms@cpu", "latency=-4ms@cpu"),
        ("size=0MB", "size=0MB"),
        ("flops=abc", "abc"),  # malformed value
        ("flops=", "flops="),
        ("flops=1.2.3", "1.2.3"),
        ("flops=nan", "nan"),
        ("flops=inf", "inf"),
        ("flops=1e400", "flops=1e400"),  # overflows to inf
        ("flops=1e-400", "flops=1e-400"),  # underflows to 0
        ("flops 0.3", "flops 0.3"),  # no '='
        ("=0.3", "=0.3"),
        ("flops=3x", "x"),  # unknown unit
        ("size=3parsecs", "parsecs"),
        ("flops=4ms", "ms"),  # units belong to their metric
        ("size=120M", "M"),
        ("latency=4M@cpu", "M"),
        ("latency=4kb@cpu", "kb"),
        ("latency=4ms", "latency=4ms"),  # latency without target
        ("latency=0.5", "latency=0.5"),
        ("latency=4ms@", "latency=4ms@"),
        ("flops=0.3@cpu", "flops=0.3@cpu"),  # target on a non-latency metric
        ("size=1.5MB@gpu", "size=1.5MB@gpu"),
    ],
)
def test_invalid_term_raises_budget_error_naming_the_input(text, needle):
    with pytest.raises(BudgetError, match=re.escape(needle)):
        parse(text)


@pytest.mark.parametrize(
    "text, what",
    [
        ("speed=0.3", "unknown metric"),
        ("flops=3", "ratio above 1"),
        ("flops=0", "positive"),
        ("flops=-1", "positive"),
        ("flops=abc", "malformed value"),
        ("flops=3x", "unknown unit"),
        ("latency=4ms", "no target"),
        ("flops=0.3@cpu", "only latency"),
    ],
)
def test_invalid_term_message_says_what_is_wrong(text, what):
    with pytest.raises(BudgetError, match=re.escape(what)):
        parse(text)


@pytest.mark.parametrize(
    "text, metric",
    [
        ("flops=0.3,flops=0.5", "flops"),
        ("flops=0.3,FLOPS=120M", "flops"),
        (["params=50k", "params=0.5"], "params"),
        ("size=1MB,params=0.5,size=0.5", "size"),
        ("latency=4ms@cpu,latency=0.5@cpu", "latency"),
    ],
)
def test_the_same_metric_twice_is_an_error(text, metric):
    with pytest.raises(BudgetError, match=rf"{metric} twice"):
        parse(text)


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,", [], [""], ["", " "]])
def test_empty_budget_is_an_error(text):
    with pytest.raises(BudgetError, match="empty"):
        parse(text)


def test_non_string_in_a_list_is_an_error():
    with pytest.raises(BudgetError, match="0.3"):
        parse(["flops=0.5", 0.3])


def test_budget_error_is_a_user_error_and_a_value_error():
    with pytest.raises(AutocompressError):
        parse("flops=3")
    with pytest.raises(ValueError):
        parse("flops=3")


@pytest.mark.parametrize("text", ["flops=1e300T", "size=1e308GiB", "latency=1e306s@cpu", "latency=5e-324us@cpu"])
def test_scaled_value_that_overflows_or_underflows_is_an_error(text):
    with pytest.raises(BudgetError):
        parse(text)


# --------------------------------------------------------------------------- properties


def _check_contract(text) -> None:
    """``parse`` returns a sane Budget or raises BudgetError, nothing else."""
    try:
        result = parse(text)
    except BudgetError as exc:
        assert str(exc)
        return
    assert isinstance(result, Budget)
    assert result.terms
    keys = [(t.metric, t.target) for t in result.terms]
    assert len(keys) == len(set(keys))
    for term in result.terms:
        assert term.metric in METRICS
        assert (term.target is not None) == (term.metric == "latency")
        if term.relative:
            assert math.isfinite(term.value) and 0 < term.value <= 1
        else:
            assert math.isfinite(term.value) and term.value > 0


_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Each piece of a near-miss term is usually well-formed and sometimes broken, so that both
# the accepting paths (including extreme numbers and every unit) and each error are reached.
_good_metrics = st.sampled_from(["flops", "params", "size", "latency", "FLOPS", "Latency"])
_bad_metrics = st.sampled_from(["flop", "speed", "size_", "", "flops params", "é", "accuracy"])
_good_numbers = st.one_of(
    st.floats(min_value=0, max_value=1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=0).map(str),
    st.integers(min_value=-330, max_value=330).map(lambda e: f"1e{e}"),
    # close to float overflow / underflow, where a unit's scale can push the value out of range
    st.one_of(st.integers(290, 308), st.integers(-324, -300)).map(lambda e: f"1e{e}"),
    st.sampled_from(["1", "0.5", ".5", "1e-1", "1e300", "5e-324", "1.7976931348623157e308"]),
)
_bad_numbers = st.one_of(
    st.floats().map(repr),  # includes nan, inf, -0.0
    st.integers().map(str),
    st.from_regex(r"[-+]?[0-9]{0,3}\.?[0-9]{0,3}([eE][-+]?[0-9]{0,3})?", fullmatch=True),
    st.sampled_from(["0", "-1", "5.", "nan", "inf", "1e400", "1e-400", "abc", "", "1.2.3", "0x10", "1_000"]),
)
_good_units = st.sampled_from(
    ["", "k", "K", "M", "m", "G", "T", "B", "kB", "MB", "mb", "KiB", "MiB", "GiB", "us", "ms", "s"]
)
_bad_units = st.sampled_from(["x", "parsecs", "%", " M", "kk", "Mi", "µs", "h"])
_good_targets = st.sampled_from(["cpu", "jetson-orin-nano", " cpu", "gpu0"])
_bad_targets = st.one_of(st.sampled_from(["", " ", "@cpu", "gpu 0"]), st.text(max_size=5))


@st.composite
def _near_miss_term(draw):
    def piece(good, bad):
        return draw(bad) if draw(st.integers(0, 3)) == 0 else draw(good)

    metric = piece(_good_metrics, _bad_metrics)
    sep = piece(st.sampled_from(["=", " = "]), st.sampled_from(["==", ":", "", "= ="]))
    number = piece(_good_numbers, _bad_numbers)
    unit = piece(_good_units, _bad_units)
    wants_target = metric.lower() == "latency"
    if draw(st.integers(0, 3)) == 0:
        wants_target = not wants_target
    target = piece(_good_targets, _bad_targets) if wants_target else None
    return metric + sep + number + unit + ("" if target is None else "@" + target)


_near_miss = st.one_of(
    st.lists(_near_miss_term(), min_size=1, max_size=3).map(",".join),
    st.lists(_near_miss_term(), min_size=0, max_size=3),
)


@_FAST
@given(st.one_of(st.text(), st.lists(st.text(), max_size=3)))
def test_parse_of_arbitrary_text_returns_a_sane_budget_or_raises_budget_error(text):
    _check_contract(text)


@_FAST
@given(_near_miss)
@example("flops=1e300T")
def test_parse_of_near_miss_strings_returns_a_sane_budget_or_raises_budget_error(text):
    _check_contract(text)
