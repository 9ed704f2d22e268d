"""The usage a channel reports, read into one record: every vendor's convention, no part ever
negative or beyond its total, and nothing a channel sends can make it raise."""

from hypothesis import given
from hypothesis import strategies as st

from relay.metering import Usage, reported_usage
from tests.fuzzing import fuzz_settings
from tests.relay.test_fuzz import json_values

counts = st.integers(min_value=0, max_value=2**31 - 1)
anything = st.one_of(
    counts, st.integers(), st.floats(), st.text(max_size=5), st.none(), st.booleans()
)
DETAILS_IN = ("cached_tokens", "cache_write_tokens", "cache_write_1h_tokens", "audio_tokens",
              "image_tokens")  # fmt: skip
DETAILS_OUT = ("reasoning_tokens", "audio_tokens")


def parts_fit(usage: Usage) -> bool:
    values = usage._asdict()
    del values["estimated"]
    if any(not isinstance(v, int) or v < 0 for v in values.values()):
        return False
    input_parts = (
        usage.cache_read_tokens
        + usage.cache_write_5m_tokens
        + usage.cache_write_1h_tokens
        + usage.audio_input_tokens
    )
    return (
        input_parts <= usage.prompt_tokens
        and usage.image_tokens <= usage.prompt_tokens
        and usage.reasoning_tokens + usage.audio_output_tokens <= usage.completion_tokens
        and usage.parts.uncached_input == usage.prompt_tokens - input_parts
    )


@fuzz_settings(400)
@given(
    counts,
    counts,
    st.dictionaries(st.sampled_from(DETAILS_IN), anything),
    st.dictionaries(st.sampled_from(DETAILS_OUT), anything),
    st.dictionaries(
        st.sampled_from(
            ["prompt_cache_hit_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
        ),
        anything,
    ),
)
def test_no_part_is_negative_or_beyond_its_total(prompt, completion, inward, outward, extra):
    usage = reported_usage(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": inward,
            "completion_tokens_details": outward,
            **extra,
        }
    )
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        prompt,
        completion,
    )
    assert parts_fit(usage)


@fuzz_settings(300)
@given(json_values)
def test_whatever_a_channel_sends_is_read_or_refused_never_raises(value):
    for usage in (
        value,
        {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": value},
    ):
        read = reported_usage(usage)
        assert read is None or parts_fit(read)


def test_openais_cached_and_reasoning_tokens():
    usage = reported_usage(
        {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
        }
    )
    assert usage == Usage(2006, 300, False, cache_read_tokens=1920, reasoning_tokens=192)


def test_deepseeks_cache_hits():
    usage = reported_usage(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 10,
            "total_tokens": 1010,
            "prompt_cache_hit_tokens": 900,
            "prompt_cache_miss_tokens": 100,
        }
    )
    assert usage is not None and usage.cache_read_tokens == 900


def test_a_proxys_anthropic_names_and_our_adapters_cache_writes():
    passed_on = reported_usage(
        {
            "prompt_tokens": 5000,
            "completion_tokens": 50,
            "cache_read_input_tokens": 3000,
            "cache_creation_input_tokens": 1500,
        }
    )
    assert passed_on is not None
    assert (passed_on.cache_read_tokens, passed_on.cache_write_5m_tokens) == (3000, 1500)
    ours = reported_usage(
        {
            "prompt_tokens": 5000,
            "completion_tokens": 50,
            "prompt_tokens_details": {
                "cached_tokens": 3000,
                "cache_write_tokens": 1500,
                "cache_write_1h_tokens": 500,
            },
        }
    )
    assert ours is not None
    assert (ours.cache_write_5m_tokens, ours.cache_write_1h_tokens) == (1000, 500)


def test_totals_that_are_not_counts_are_not_believed():
    assert reported_usage({"prompt_tokens": -1, "completion_tokens": 3}) is None
    assert reported_usage({"prompt_tokens": 1.5, "completion_tokens": 3}) is None
    assert reported_usage({"prompt_tokens": True, "completion_tokens": 3}) is None
    assert reported_usage({"prompt_tokens": 3}) is None
