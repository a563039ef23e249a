"""Trace loaders: every format parses, detection works, bad rows are named, bundled traces load."""

import json
import logging

import numpy as np
import pytest

from arrow_rl.workload import (
    TraceFormatError,
    Workload,
    bundled_trace_path,
    detect_format,
    load_bundled,
    load_trace,
    load_workload,
)
from arrow_rl.workload.bundled import BUNDLED_TRACES

# Small sample files, written by hand for these tests (values are made up, not real rows).
CANONICAL = "arrival_s,input_tokens,output_tokens\n0.0,100,10\n0.5,200,20\n0.5,300,30\n2.0,400,40\n"
AZURE_2023 = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:17:03.9799600,4808,10\n"
    "2023-11-16 18:17:04.0319600,3180,8\n"
    "2023-11-16 18:17:06.4799601,110,27\n"
)
AZURE_2024 = (  # the week-long files mix '...00.001163+00:00' and '...00+00:00'
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2024-05-12 00:00:00.001163+00:00,1452,3\n"
    "2024-05-12 00:00:01+00:00,584,3\n"
    "2024-05-12 00:00:01.157988+00:00,862,38\n"
)
MOONCAKE = "\n".join(json.dumps(r) for r in [
    {"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [1, 2, 3]},
    {"timestamp": 1500, "input_length": 6472, "output_length": 26, "hash_ids": [1, 2]},
    {"timestamp": 3250, "input_length": 700, "output_length": 9},
]) + "\n"
# Synthetic BurstGPT-schema sample (not real BurstGPT rows): two failures (0 tokens) among five.
BURSTGPT = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "7,GPT-4,1021,0,1021,API log\n"
    "7,ChatGPT,230,311,541,Conversation log\n"
    "9,ChatGPT,0,0,0,Conversation log\n"
    "12,GPT-4,88,64,152,API log\n"
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- formats


def test_canonical_parses_as_written(tmp_path):
    w = load_workload(write(tmp_path, "w.csv", CANONICAL))
    np.testing.assert_allclose(w.arrival_s, [0.0, 0.5, 0.5, 2.0])
    assert w.input_tokens.tolist() == [100, 200, 300, 400]
    assert w.output_tokens.tolist() == [10, 20, 30, 40]
    assert w.name == "w"


def test_canonical_arrivals_are_not_rebased(tmp_path):
    w = load_workload(write(tmp_path, "w.csv", "arrival_s,input_tokens,output_tokens\n3.5,1,1\n4,2,2\n"))
    np.testing.assert_allclose(w.arrival_s, [3.5, 4.0])


def test_azure_2023_seven_fractional_digits_rebased_to_zero(tmp_path):
    w = load_workload(write(tmp_path, "a.csv", AZURE_2023))
    np.testing.assert_allclose(w.arrival_s, [0.0, 0.052, 2.5000001], atol=1e-9)
    assert w.input_tokens.tolist() == [4808, 3180, 110]
    assert w.output_tokens.tolist() == [10, 8, 27]


def test_azure_2024_utc_offsets_and_missing_fraction(tmp_path):
    w = load_workload(write(tmp_path, "a.csv", AZURE_2024))
    np.testing.assert_allclose(w.arrival_s, [0.0, 0.998837, 1.156825], atol=1e-9)


def test_azure_nonzero_utc_offsets_are_applied(tmp_path):
    text = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
            "2024-05-12 02:00:00+02:00,10,1\n"      # 00:00:00 UTC
            "2024-05-12 00:00:05Z,10,1\n"            # 00:00:05 UTC
            "2024-05-11 23:00:10-01:00,10,1\n")      # 00:00:10 UTC
    w = load_workload(write(tmp_path, "a.csv", text))
    np.testing.assert_allclose(w.arrival_s, [0.0, 5.0, 10.0])


def test_mooncake_milliseconds_to_seconds_hash_ids_optional(tmp_path):
    w = load_workload(write(tmp_path, "m.jsonl", MOONCAKE))
    np.testing.assert_allclose(w.arrival_s, [0.0, 1.5, 3.25])
    assert w.input_tokens.tolist() == [6955, 6472, 700]
    assert w.output_tokens.tolist() == [52, 26, 9]


def test_burstgpt_drops_failures_and_counts_them(tmp_path, caplog):
    path = write(tmp_path, "b.csv", BURSTGPT)
    with caplog.at_level(logging.WARNING):
        loaded = load_trace(path)
    w = loaded.workload
    assert loaded.report.dropped == 2 and loaded.report.rows_read == 5
    assert "dropped 2 of 5 rows" in caplog.text
    np.testing.assert_allclose(w.arrival_s, [0.0, 2.0, 7.0])
    assert w.input_tokens.tolist() == [472, 230, 88]
    assert w.output_tokens.tolist() == [18, 311, 64]


def test_burstgpt_extra_v12_columns_are_ignored(tmp_path):
    text = ("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
            "1.5,s1,2.0,ChatGPT,10,5,15,API log\n")
    w = load_workload(write(tmp_path, "b.csv", text))
    assert (w.input_tokens.tolist(), w.output_tokens.tolist()) == ([10], [5])


def test_azure_zero_output_clamped_to_one_and_counted(tmp_path):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-12 00:00:00,10,0\n2024-05-12 00:00:01,10,4\n"
    loaded = load_trace(write(tmp_path, "a.csv", text))
    assert loaded.workload.output_tokens.tolist() == [1, 4]
    assert loaded.report.clamped == 1 and loaded.report.dropped == 0


def test_azure_zero_input_rows_dropped_and_counted(tmp_path):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-12 00:00:00,0,3\n2024-05-12 00:00:01,10,4\n"
    loaded = load_trace(write(tmp_path, "a.csv", text))
    assert len(loaded.workload) == 1 and loaded.report.dropped == 1
    assert loaded.workload.arrival_s.tolist() == [0.0]  # re-based to the first kept row


def test_real_trace_out_of_order_rows_are_stably_sorted_and_counted(tmp_path):
    text = ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
            "10,ChatGPT,1,1,2,API log\n5,ChatGPT,2,2,4,API log\n10,ChatGPT,3,3,6,API log\n")
    loaded = load_trace(write(tmp_path, "b.csv", text))
    assert loaded.workload.input_tokens.tolist() == [2, 1, 3]
    assert loaded.report.reordered == 2


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("text,fmt", [(CANONICAL, "canonical"), (AZURE_2023, "azure"), (AZURE_2024, "azure"),
                                      (MOONCAKE, "mooncake"), (BURSTGPT, "burstgpt")])
def test_format_detected_from_content_not_extension(tmp_path, text, fmt):
    assert detect_format(write(tmp_path, "trace.txt", text)) == fmt


def test_detection_tolerates_bom_and_header_case(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("\ufefftimestamp,contexttokens,generatedtokens\n2023-11-16 18:17:03,5,5\n".encode())
    assert detect_format(path) == "azure"
    assert len(load_workload(path)) == 1


def test_explicit_format_overrides_detection(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_2023)
    with pytest.raises(TraceFormatError, match="lacks column 'arrival_s'"):
        load_workload(path, format="canonical")


def test_unknown_header_is_rejected_with_the_header(tmp_path):
    with pytest.raises(TraceFormatError, match="unrecognised header") as err:
        load_workload(write(tmp_path, "x.csv", "time,prompt,completion\n1,2,3\n"))
    assert err.value.line == 1 and "time,prompt,completion" in str(err.value)


def test_unknown_format_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown trace format 'parquet'"):
        load_workload(write(tmp_path, "w.csv", CANONICAL), format="parquet")


# ---------------------------------------------------------------------------- bad rows


def test_bad_token_value_names_file_line_field_and_value(tmp_path):
    path = write(tmp_path, "bad.csv", AZURE_2023.replace("3180", "31x0"))
    with pytest.raises(TraceFormatError) as err:
        load_workload(path)
    e = err.value
    assert (e.line, e.field, e.value) == (3, "ContextTokens", "31x0")
    assert "bad.csv" in str(e) and "line 3" in str(e) and "ContextTokens" in str(e) and "31x0" in str(e)


def test_negative_tokens_rejected_not_dropped(tmp_path):
    with pytest.raises(TraceFormatError) as err:
        load_workload(write(tmp_path, "b.csv", BURSTGPT.replace("230,311", "230,-311")))
    assert (err.value.line, err.value.field) == (4, "Response tokens")


def test_fractional_tokens_rejected(tmp_path):
    with pytest.raises(TraceFormatError) as err:
        load_workload(write(tmp_path, "w.csv", CANONICAL.replace("200,20", "200.5,20")))
    assert (err.value.line, err.value.field, err.value.value) == (3, "input_tokens", "200.5")


def test_bad_timestamp_names_line_and_field(tmp_path):
    path = write(tmp_path, "a.csv", AZURE_2023.replace("2023-11-16 18:17:04.0319600", "yesterday"))
    with pytest.raises(TraceFormatError) as err:
        load_workload(path)
    assert (err.value.line, err.value.field, err.value.value) == (3, "TIMESTAMP", "yesterday")


def test_wrong_field_count_names_line(tmp_path):
    with pytest.raises(TraceFormatError, match="expected 3 fields") as err:
        load_workload(write(tmp_path, "w.csv", CANONICAL.replace("0.5,300,30", "0.5,300")))
    assert err.value.line == 4


def test_canonical_decreasing_arrivals_rejected_with_line(tmp_path):
    text = "arrival_s,input_tokens,output_tokens\n0,1,1\n2.0,1,1\n1.5,1,1\n"
    with pytest.raises(TraceFormatError, match="non-decreasing") as err:
        load_workload(write(tmp_path, "w.csv", text))
    assert (err.value.line, err.value.field) == (4, "arrival_s")
    assert "w.csv" in str(err.value)


def test_canonical_zero_output_tokens_rejected(tmp_path):
    with pytest.raises(TraceFormatError, match=">= 1") as err:
        load_workload(write(tmp_path, "w.csv", CANONICAL.replace("0.5,200,20", "0.5,200,0")))
    assert (err.value.line, err.value.field) == (3, "output_tokens")


def test_mooncake_missing_field_names_line(tmp_path):
    text = MOONCAKE + '{"timestamp": 4000, "input_length": 10}\n'
    with pytest.raises(TraceFormatError) as err:
        load_workload(write(tmp_path, "m.jsonl", text))
    assert (err.value.line, err.value.field) == (4, "output_length")


def test_mooncake_invalid_json_names_line(tmp_path):
    with pytest.raises(TraceFormatError, match="invalid JSON") as err:
        load_workload(write(tmp_path, "m.jsonl", MOONCAKE + "{not json\n"), format="mooncake")
    assert err.value.line == 4


def test_header_only_file_rejected(tmp_path):
    with pytest.raises(TraceFormatError, match="no rows"):
        load_workload(write(tmp_path, "w.csv", "arrival_s,input_tokens,output_tokens\n"))


def test_missing_file_error_lists_bundled_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="azure-conv"):
        load_workload(tmp_path / "nope.csv")


# -------------------------------------------------------------- scaling, window, round trip


def test_rate_scale_two_halves_timestamps_and_doubles_rate():
    w = load_bundled("azure-conv")
    fast = w.scaled(2)
    np.testing.assert_allclose(fast.arrival_s, w.arrival_s / 2)
    assert fast.mean_rate == pytest.approx(2 * w.mean_rate)
    assert (fast.input_tokens == w.input_tokens).all()


def test_window_keeps_requests_in_range_rebased():
    w = load_bundled("azure-conv")
    part = w.window(600.0, 900.0)
    inside = (w.arrival_s >= 600.0) & (w.arrival_s < 900.0)
    assert len(part) == int(inside.sum()) > 0
    np.testing.assert_allclose(part.arrival_s, w.arrival_s[inside] - 600.0)


def test_to_csv_round_trip(tmp_path):
    w = load_bundled("mooncake").head(500)
    path = tmp_path / "rt.csv"
    w.to_csv(path)
    back = load_workload(path)
    assert detect_format(path) == "canonical"
    np.testing.assert_allclose(back.arrival_s, w.arrival_s, atol=1e-6)
    assert (back.input_tokens == w.input_tokens).all() and (back.output_tokens == w.output_tokens).all()


# ------------------------------------------------------------------------ bundled traces


@pytest.mark.parametrize("name,rows", [("azure-code", 8819), ("azure-conv", 19366), ("mooncake", 3993)])
def test_bundled_traces_load_with_documented_row_counts(name, rows):
    w = load_bundled(name)
    assert isinstance(w, Workload) and len(w) == rows == BUNDLED_TRACES[name][2]
    assert w.arrival_s[0] == 0.0


def test_bundled_names_accepted_wherever_a_path_is():
    by_name = load_workload("azure-code")
    by_path = load_workload(bundled_trace_path("azure-code"))
    assert by_name.name == "azure-code"
    np.testing.assert_array_equal(by_name.arrival_s, by_path.arrival_s)


def test_bundled_azure_conv_statistics_match_readme():
    # data/README.md: span 3,501.7 s, 5.53 req/s, input mean 1154.7, output mean 211.1
    w = load_bundled("azure-conv")
    assert w.duration_s == pytest.approx(3501.7, abs=0.05)
    assert w.mean_rate == pytest.approx(5.53, abs=0.005)
    assert w.input_tokens.mean() == pytest.approx(1154.7, abs=0.05)
    assert w.output_tokens.mean() == pytest.approx(211.1, abs=0.05)


def test_unknown_bundled_name_lists_valid_ones():
    with pytest.raises(KeyError, match="azure-code, azure-conv, mooncake"):
        bundled_trace_path("sharegpt")



def test_chunked_parsing_matches_single_chunk_and_keeps_line_numbers(tmp_path, monkeypatch):
    import arrow_rl.workload.loaders as loaders

    path = write(tmp_path, "a.csv", AZURE_2023 + AZURE_2023.split("\n", 1)[1].replace("18:17", "18:19"))
    whole = load_workload(path)
    monkeypatch.setattr(loaders, "_CHUNK_ROWS", 2)
    chunked = load_workload(path)
    np.testing.assert_array_equal(whole.arrival_s, chunked.arrival_s)
    np.testing.assert_array_equal(whole.input_tokens, chunked.input_tokens)
    text = path.read_text()
    cut = text.rindex("110,27")  # corrupt only the last row (line 7, in the fourth chunk)
    bad = write(tmp_path, "bad.csv", text[:cut] + "110,2x7" + text[cut + 6:])
    with pytest.raises(TraceFormatError) as err:
        load_workload(bad)
    assert err.value.line == 7


def test_mooncake_hash_ids_become_the_workloads_512_token_prefix_blocks(tmp_path):
    rows = [{"timestamp": 2000, "input_length": 700, "output_length": 9, "hash_ids": [7, 8]},
            {"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [1, 2, 3]},
            {"timestamp": 1500, "input_length": 0, "output_length": 26, "hash_ids": [1]},   # dropped
            {"timestamp": 1000, "input_length": 600, "output_length": 2}]
    w = load_workload(write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n"))
    assert w.prefix_block_tokens == 512
    assert [w.prefix_ids(k).tolist() for k in range(len(w))] == [[1, 2, 3], [], [7, 8]]   # time order


def test_mooncake_hash_ids_must_be_integers(tmp_path):
    bad = json.dumps({"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": ["a"]}) + "\n"
    with pytest.raises(TraceFormatError, match="line 1, field 'hash_ids': expected a list of integers"):
        load_workload(write(tmp_path, "m.jsonl", bad))


def test_canonical_csv_prefix_groups_share_their_full_blocks(tmp_path):
    text = ("arrival_s,input_tokens,output_tokens,prefix_group,prefix_tokens\n"
            "0.0,570,250,3,100\n0.5,560,250,3,100\n1.0,300,20,,\n")
    w = load_workload(write(tmp_path, "c.csv", text))
    assert len(w.prefix_ids(0)) == 6 and w.prefix_ids(0).tolist() == w.prefix_ids(1).tolist()
    assert w.prefix_ids(2).size == 0


def test_canonical_csv_round_trips_hash_ids(tmp_path):
    w = Workload(np.array([0.0, 1.0]), np.array([1200, 700]), np.array([5, 5])).with_prefix_hashes(
        [[11, 12], [11]], block_tokens=512)
    path = tmp_path / "w.csv"
    w.to_csv(path)
    back = load_workload(path)
    assert back.prefix_block_tokens == 512
    assert [back.prefix_ids(k).tolist() for k in range(2)] == [[11, 12], [11]]


def test_canonical_csv_prefix_errors_name_the_line_and_field(tmp_path):
    text = "arrival_s,input_tokens,output_tokens,prefix_group,prefix_tokens\n0.0,50,5,1,80\n"
    with pytest.raises(TraceFormatError, match="line 2, field 'prefix_tokens'"):
        load_workload(write(tmp_path, "c.csv", text))
