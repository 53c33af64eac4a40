"""tunewiz.core.data without a tokenizer: sources, formats, problems and their places."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import pytest

from tunewiz.core.config import DataConfig
from tunewiz.core.data import (
    SAMPLE_DATASET,
    TASK_FORMATS,
    TASK_HELP,
    DataCancelled,
    detect,
    inspect_data,
)
from tunewiz.core.errors import UserError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def inspect(path, **kw):
    return inspect_data(DataConfig(data=str(path), **kw))


def where_kinds(report):
    return {(p.where, p.kind) for p in report.problems}


QA = [{"prompt": f"question {i}?", "response": f"answer {i}."} for i in range(5)]


# -- public datasets (tests/fixtures) and an Alpaca file like them ---------------------------------------------------


def test_alpaca_demo_is_detected_with_evidence(data_files):
    report = inspect(data_files / "alpaca.json")
    assert report.format == "alpaca"
    assert report.rows_total == 63
    assert "instruction" in report.evidence[0] and "output" in report.evidence[0]
    # The file ends with exact repeats of rows 3, 17 and 42: duplicates pointing at the first copy.
    dups = [p for p in report.problems if p.kind == "duplicate"]
    assert report.rows_ok == 63 - len(dups) == 60
    assert sorted(p.message for p in dups) == [
        "same as alpaca.json[17]",
        "same as alpaca.json[3]",
        "same as alpaca.json[42]",
    ]


def test_alpaca_input_is_appended_to_the_instruction(data_files):
    rows = json.loads((data_files / "alpaca.json").read_text())
    with_input = next(r for r in rows if r["input"].strip())
    from tunewiz.core.data import normalize

    norm, issues, _ = normalize(with_input, "alpaca", {})
    assert not issues
    user = norm["messages"][-2]
    assert user == {
        "role": "user",
        "content": with_input["instruction"] + "\n\n" + with_input["input"],
    }
    assert norm["messages"][-1] == {"role": "assistant", "content": with_input["output"]}


def test_identity_and_c4(data_files):
    assert inspect(data_files / "identity.json").rows_ok == 91
    report = inspect(data_files / "c4_demo_16.jsonl", task="text")
    assert (report.format, report.rows_total, report.rows_ok) == ("text", 16, 16)


def test_detect_suggests_the_task(data_files):
    assert detect(DataConfig(data=str(data_files / "c4_demo_16.jsonl")))[:2] == ("text", "text")
    assert detect(DataConfig(data=str(data_files / "identity.json")))[:2] == (
        "alpaca",
        "instruction",
    )


def test_task_that_does_not_read_the_format_says_which_does(data_files):
    with pytest.raises(UserError) as err:
        inspect(data_files / "c4_demo_16.jsonl", task="instruction")
    assert err.value.where == "data.task" and "--task text" in err.value.hint


def test_task_help_and_formats_cover_every_task():
    assert set(TASK_HELP) == set(TASK_FORMATS) == {"instruction", "chat", "text"}


# -- sources ---------------------------------------------------------------------


def test_bundled_sample_is_the_default_and_clean():
    assert DataConfig().data == "sample"
    report = inspect_data(DataConfig())
    assert report.source == str(SAMPLE_DATASET)
    assert report.format == "alpaca" and report.rows_ok == report.rows_total >= 40
    assert not report.problems


def test_bad_line_in_the_middle_of_jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = (
        [json.dumps(r) for r in QA[:2]] + ['{"prompt": "oops", '] + [json.dumps(r) for r in QA[2:]]
    )
    path.write_text("\n".join(lines) + "\n")
    report = inspect(path)
    assert report.rows_total == 6 and report.rows_ok == 5
    assert where_kinds(report) == {("data.jsonl:3", "invalid_json")}


def test_missing_and_empty_fields_name_row_and_field(tmp_path):
    rows = [
        QA[0],
        {"prompt": "q"},
        {"prompt": "q2", "response": "  "},
        {"prompt": 3, "response": "a"},
    ]
    report = inspect(write_jsonl(tmp_path / "d.jsonl", rows))
    assert where_kinds(report) == {
        ("d.jsonl:2 field 'response'", "missing_field"),
        ("d.jsonl:3 field 'response'", "empty_field"),
        ("d.jsonl:4 field 'prompt'", "non_string"),
    }
    assert report.rows_ok == 1


def test_json_array_places_are_indexes(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}])
    )
    report = inspect(path)
    assert where_kinds(report) == {("d.json[1].output", "empty_field")}


def test_json_array_is_streamed_across_chunks(tmp_path, monkeypatch, data_files):
    import tunewiz.core.data.load as load

    monkeypatch.setattr(load, "CHUNK", 97)  # force elements to straddle chunk boundaries
    report = inspect(data_files / "identity.json")
    assert (report.rows_total, report.rows_ok) == (91, 91)


def test_broken_json_array_says_line_and_keeps_rows_before(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"prompt": "a", "response": "b"},\n {"prompt": "c" "response": "d"}\n]\n')
    report = inspect(path)
    assert report.rows_ok == 1
    (problem,) = report.problems
    assert (problem.where, problem.kind) == ("d.json:3", "invalid_json")


def test_json_object_of_arrays(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"train": QA, "meta": ["x"]}))
    (tmp_path / "cols.json").write_text(
        json.dumps({"question": ["a?", "b?"], "answer": ["A.", "B."]})
    )
    assert inspect(tmp_path / "split.json").rows_ok == 5
    report = inspect(tmp_path / "cols.json")
    assert report.format == "prompt_completion" and report.rows_ok == 2


def test_json_file_holding_json_lines(tmp_path):
    report = inspect(write_jsonl(tmp_path / "lines.json", QA))
    assert report.rows_ok == 5


def test_csv_with_missing_column_and_short_row(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('question,answer\n"What, exactly?",Yes.\nno answer here\nq3,a3\n')
    report = inspect(path)
    assert report.format == "prompt_completion"
    assert where_kinds(report) == {("rows.csv:3 field 'answer'", "missing_field")}
    assert report.rows_ok == 2


def test_csv_missing_mapped_column_is_unusable_with_reason(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("question,reply\nq1,a1\nq2,a2\n")
    cfg = DataConfig(data=str(path), columns={"prompt": "question", "response": "answer"})
    report = inspect_data(cfg)
    assert report.rows_ok == 0 and report.problem_counts == {"missing_field": 2}

    from tunewiz.core.data import prepare

    with pytest.raises(UserError, match=r"all 2 rows.*missing field 'answer'"):
        prepare(cfg, tokenizer=None)


def test_tsv_parquet_txt_gzip_and_folder(tmp_path):
    (tmp_path / "d.tsv").write_text("prompt\tcompletion\nq1\ta1\nq2\ta2\n")
    assert inspect(tmp_path / "d.tsv").rows_ok == 2

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(QA), tmp_path / "d.parquet")
    report = inspect(tmp_path / "d.parquet")
    assert report.format == "prompt_completion" and report.rows_ok == 5

    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in QA))
    assert inspect(tmp_path / "d.jsonl.gz").rows_ok == 5
    import bz2
    import lzma

    (tmp_path / "d.csv.bz2").write_bytes(bz2.compress(b"prompt,response\nq,a\n"))
    (tmp_path / "d.jsonl.xz").write_bytes(lzma.compress(json.dumps(QA[0]).encode() + b"\n"))
    assert inspect(tmp_path / "d.csv.bz2").rows_ok == inspect(tmp_path / "d.jsonl.xz").rows_ok == 1
    import zstandard

    zst = zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in QA).encode())
    (tmp_path / "d.jsonl.zst").write_bytes(zst)
    assert inspect(tmp_path / "d.jsonl.zst").rows_ok == 5

    txt = tmp_path / "notes.txt"
    txt.write_text("first paragraph\nstill first\n\n\nsecond one\n\nthird\n")
    report = inspect(txt, task="text")
    assert report.rows_ok == 3
    assert [p["text"] for p in report.preview] == [
        "first paragraph\nstill first",
        "second one",
        "third",
    ]
    assert inspect_data(DataConfig(data=str(txt), task="text", text_split="document")).rows_ok == 1

    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", QA[:3])
    write_jsonl(folder / "b.jsonl", QA[3:] + [{"prompt": "x"}])
    report = inspect(folder)
    assert report.rows_total == 6 and report.rows_ok == 5
    assert where_kinds(report) == {("b.jsonl:3 field 'response'", "missing_field")}


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="empty"):
        inspect(tmp_path / "empty.jsonl")


def test_file_of_only_bad_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n[1, 2]\n{\n")
    report = inspect(path)
    assert report.rows_total == 3 and report.rows_ok == 0
    assert [p.kind for p in report.problems] == ["invalid_json", "not_an_object", "invalid_json"]


def test_mixed_encodings(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"prompt": "café?", "response": "oui."}, ensure_ascii=False).encode("utf-8")
    latin = json.dumps({"prompt": "crème?", "response": "brûlée."}, ensure_ascii=False).encode(
        "latin-1"
    )
    path.write_bytes(good + b"\n" + latin + b"\n" + good.replace(b"oui", b"non") + b"\n")
    report = inspect(path)
    assert report.rows_ok == 2
    assert where_kinds(report) == {("mixed.jsonl:2", "non_utf8")}

    csv_path = tmp_path / "mixed.csv"
    csv_path.write_bytes("prompt,response\nq,é\n".encode() + "q2,è\n".encode("latin-1"))
    assert where_kinds(inspect(csv_path)) == {("mixed.csv:3", "non_utf8")}


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(UserError, match="unknown file type"):
        inspect(tmp_path / "d.xlsx")
    with pytest.raises(UserError, match="not found"):
        inspect(tmp_path / "nope.jsonl")


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        inspect_data(DataConfig(data="someone/some-dataset"))
    assert "someone/some-dataset" in str(err.value) and "offline" in err.value.hint


def test_undetectable_columns_say_what_was_found(tmp_path):
    with pytest.raises(UserError, match="`foo`") as err:
        inspect(write_jsonl(tmp_path / "d.jsonl", [{"foo": "a", "bar": "b"}]))
    assert "--columns" in err.value.hint


def test_column_mapping(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "a?", "a": "b."}, {"q": "c?", "a": "d."}])
    report = inspect_data(DataConfig(data=str(path), columns={"prompt": "q", "response": "a"}))
    assert report.format == "prompt_completion" and report.rows_ok == 2
    assert report.preview[0]["messages"][-1]["content"] == "b."


def test_duplicates_point_at_the_first_copy(tmp_path):
    report = inspect(write_jsonl(tmp_path / "d.jsonl", [QA[0], QA[1], QA[0]]))
    assert report.rows_ok == 2
    assert [(p.where, p.message) for p in report.problems] == [("d.jsonl:3", "same as d.jsonl:1")]


# -- chat formats -------------------------------------------------------------------


def msg(role, content):
    return {"role": role, "content": content}


def test_openai_messages_turn_order_and_roles(tmp_path):
    rows = [
        {"messages": [msg("system", "be brief"), msg("user", "hi"), msg("assistant", "hello")]},
        {"messages": [msg("assistant", "hello")]},
        {"messages": [msg("user", "hi"), msg("assistant", "a"), msg("user", "more")]},
        {"messages": [msg("user", "hi"), msg("user", "again"), msg("assistant", "a")]},
        {"messages": [msg("user", "hi"), msg("wizard", "a")]},
        {"messages": [msg("user", "hi"), msg("assistant", ["not", "text"])]},
    ]
    report = inspect(write_jsonl(tmp_path / "c.jsonl", rows), task="chat")
    assert report.format == "openai" and report.rows_ok == 1
    got = {(p.where, p.kind, p.message) for p in report.problems}
    assert got == {
        ("c.jsonl:2 field 'messages'", "turn_order", "no user turn"),
        (
            "c.jsonl:3 field 'messages'",
            "turn_order",
            "the conversation does not end with an assistant turn",
        ),
        ("c.jsonl:4 field 'messages'", "turn_order", "two user turns in a row"),
        ("c.jsonl:5 field 'messages[1]'", "unknown_role", "unknown role 'wizard'"),
        (
            "c.jsonl:6 field 'messages[1].content'",
            "non_string",
            "'messages[1].content' should be text, got list",
        ),
    }


def test_tool_calls_function_results_and_images_are_counted(tmp_path):
    row = {
        "messages": [
            msg(
                "user",
                [
                    {"type": "text", "text": "what is here?"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            ),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "function": {"name": "f"}}],
            },
            {"role": "tool", "content": "42", "tool_call_id": "1"},
            msg("assistant", "It is 42."),
        ]
    }
    report = inspect(write_jsonl(tmp_path / "t.jsonl", [row]), task="chat")
    assert report.rows_ok == 1
    assert report.skipped_parts == {"images": 1, "tool calls": 1, "function results": 1}
    assert report.preview[0]["messages"] == [
        msg("user", "what is here?"),
        msg("assistant", "It is 42."),
    ]


def test_sharegpt_with_system(tmp_path):
    row = {
        "system": "You are terse.",
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
    }
    report = inspect(write_jsonl(tmp_path / "s.jsonl", [row]), task="chat")
    assert report.format == "sharegpt"
    assert report.preview[0]["messages"] == [
        msg("system", "You are terse."),
        msg("user", "hi"),
        msg("assistant", "yo"),
    ]


def test_preference_data_is_named_and_trains_on_chosen(tmp_path):
    rows = [{"prompt": "2+2?", "chosen": "4.", "rejected": "5."}]
    report = inspect(write_jsonl(tmp_path / "p.jsonl", rows))
    assert report.format == "preference" and report.preference_data
    assert any("rejected" in n for n in report.notes)
    assert report.preview[0]["messages"] == [msg("user", "2+2?"), msg("assistant", "4.")]


def test_alpaca_system_and_history(tmp_path):
    row = {"instruction": "and 3+3?", "output": "6.", "system": "math", "history": [["2+2?", "4."]]}
    report = inspect(write_jsonl(tmp_path / "h.jsonl", [row]))
    assert report.preview[0]["messages"] == [
        msg("system", "math"),
        msg("user", "2+2?"),
        msg("assistant", "4."),
        msg("user", "and 3+3?"),
        msg("assistant", "6."),
    ]


def test_cancel_and_progress(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(2000)])
    seen = []
    inspect_data(DataConfig(data=str(path), task="text"), progress=seen.append)
    assert seen[-1] == 2000 and seen == sorted(seen)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DataCancelled):
        inspect_data(DataConfig(data=str(path), task="text"), cancel=cancel)


def test_json_report_has_the_documented_keys(tmp_path):
    report = inspect(write_jsonl(tmp_path / "d.jsonl", [QA[0], {"prompt": "x"}]))
    out = json.loads(json.dumps(report.to_dict()))
    assert {"format", "task", "rows_total", "rows_ok", "problems", "token_stats"} <= set(out)
    assert out["problems"] == [
        {
            "where": "d.jsonl:2 field 'response'",
            "kind": "missing_field",
            "message": "missing field 'response'",
        }
    ]
    assert out["token_stats"] is None


def test_json_array_with_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "d.json"
    good = json.dumps({"prompt": "a?", "response": "b."}).encode()
    bad = json.dumps({"prompt": "crème?", "response": "x"}, ensure_ascii=False).encode("latin-1")
    path.write_bytes(b"[" + good + b",\n" + bad + b",\n" + good.replace(b"b.", b"c.") + b"]")
    report = inspect(path)
    assert report.rows_ok == 2
    assert {(p.where, p.kind) for p in report.problems} == {("d.json[1]", "non_utf8")}
