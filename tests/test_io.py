"""selftaught.io: tolerant instruction loading, pairwise eval loading, atomic record files."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from selftaught.config import DataConfig
from selftaught.io import (
    Reject,
    load_instructions,
    load_pairwise_eval,
    read_jsonl,
    read_records,
    write_jsonl,
    write_records,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.is_file():
        pytest.skip(f"shared data file {p} absent (the repo's sibling ../shared/data is not checked out)")
    return p


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# ---------------------------------------------------------------------------- jsonl rejects

def test_jsonl_rejects_each_bad_line_and_goes_on(tmp_path, caplog):
    f = write_lines(tmp_path / "mix.jsonl", [
        b'{"qid": "a", "turns": [{"content": "  Good one  "}]}',   # 1 kept (stripped)
        b'{"qid": "b", "turns": [',                                  # 2 bad JSON
        b"\xff\xfe",                                                 # 3 not UTF-8
        b'{"qid": "c", "turns": []}',                                # 4 missing field
        b'{"qid": "d", "turns": [{"content": " \\t\\n "}]}',         # 5 whitespace only
        b"[1, 2]",                                                   # 6 not an object
        b'{"qid": "a", "turns": [{"content": "dup"}]}',              # 7 duplicate id
        b"",                                                         # 8 blank: skipped silently
        b'{"qid": 9, "turns": [{"content": 5}]}',                    # 9 non-string
        b'{"qid": 10, "turns": [{"content": "caf\xc3\xa9 last"}]}',  # 10 kept after all the bad ones
    ])
    cfg = DataConfig(path=str(f), instruction_field="turns.0.content", id_field="qid")
    with caplog.at_level(logging.WARNING, logger="selftaught.io"):
        rows, rejects = load_instructions(cfg)
    assert rows == [
        {"id": "a", "instruction": "Good one", "source": "mix.jsonl:1"},
        {"id": "10", "instruction": "café last", "source": "mix.jsonl:10"},
    ]
    got = [(r.line, r.reason) for r in rejects]
    assert [g[0] for g in got] == [2, 3, 4, 5, 6, 7, 9]
    assert got[0][1].startswith("invalid JSON: ")
    assert got[1:] == [
        (3, "not valid UTF-8"),
        (4, "missing field 'turns.0.content'"),
        (5, "field 'turns.0.content' is empty"),
        (6, "row is not a JSON object (got list)"),
        (7, "duplicate id 'a' (first at line 1)"),
        (9, "field 'turns.0.content' is not a string (got int)"),
    ]
    assert all(r.file == str(f) for r in rejects)
    assert rejects[1].snippet == "\\xff\\xfe"  # raw bytes shown escaped, printable
    assert len(caplog.records) == 7 and "mix.jsonl:3: not valid UTF-8" in caplog.text


def test_default_ids_snippets_and_log_aggregation(tmp_path, caplog):
    lines = [b'{"instruction": "ok"}'] + [b"{bad " + b"y" * 300] * 25
    f = write_lines(tmp_path / "many.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="selftaught.io"):
        rows, rejects = load_instructions(DataConfig(path=str(f)))
    assert rows == [{"id": "many-1", "instruction": "ok", "source": "many.jsonl:1"}]
    assert len(rejects) == 25 and all(len(r.snippet) <= 120 for r in rejects)
    assert len(caplog.records) == 21 and "5 more rejected rows" in caplog.records[-1].getMessage()


def test_input_field_and_limit(tmp_path):
    f = tmp_path / "si.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"id": "x", "instruction": "Sort these.", "instances": [{"input": "3, 1, 2"}]},
        {"id": "y", "instruction": "Tell a joke.", "instances": [{"input": ""}]},
        {"id": "z", "instruction": "No instances."},
        {"id": "w", "instruction": "Past the limit."},
    ]))
    cfg = DataConfig(path=str(f), input_field="instances.0.input", id_field="id", limit=3)
    rows, rejects = load_instructions(cfg)
    assert [r["instruction"] for r in rows] == ["Sort these.\n\n3, 1, 2", "Tell a joke.", "No instances."]
    assert rejects == []


def test_missing_file_and_bad_builtin(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=f"^data.path: {missing} does not exist$"):
        load_instructions(DataConfig(path=str(missing)))
    with pytest.raises(FileNotFoundError, match="demo_instructions.jsonl"):  # lists what ships
        load_instructions(DataConfig(path="builtin:nope.jsonl"))


def test_builtin_demo_set():
    rows, rejects = load_instructions(DataConfig(path="builtin:demo_instructions.jsonl", id_field="id"))
    assert rejects == [] and 50 <= len(rows) <= 70
    assert rows[0]["id"] == "demo-001" and rows[0]["source"] == "demo_instructions.jsonl:1"
    assert all(len(r["instruction"].split()) <= 60 for r in rows)


def test_more_files_with_their_own_mapping_and_reference_labels(tmp_path):
    """``data.also``: each file keeps its own field mapping; ids get the file stem; the limit counts
    all files together; ``category_field`` carries a reference label (absent = unlabelled)."""
    from selftaught.config import DataSourceConfig

    arena = tmp_path / "arena.jsonl"
    arena.write_text("\n".join(json.dumps(r) for r in [
        {"question_id": "q1", "turns": [{"content": "Plan a trip."}]},
        {"question_id": "q1", "turns": [{"content": "Same id again."}]},  # line 2: duplicate within the file
        {"question_id": "q2", "turns": []},  # line 3: no turn 0
        {"question_id": "q3", "turns": [{"content": "Past the limit."}]},
    ]))
    cfg = DataConfig(path="builtin:demo_instructions.jsonl", id_field="id", category_field="category", limit=62,
                     also=[DataSourceConfig(path=str(arena), instruction_field="turns.0.content", id_field="question_id")])
    rows, rejects = load_instructions(cfg)
    assert len(rows) == 62 and rows[0]["reference_category"] == "Coding"
    extra = rows[60:]
    assert [r["id"] for r in extra] == ["arena:q1", "arena:q3"] and [r["source"] for r in extra] == ["arena.jsonl:1", "arena.jsonl:4"]
    assert "reference_category" not in extra[0]
    assert sorted((Path(r.file).name, r.line) for r in rejects) == [("arena.jsonl", 2), ("arena.jsonl", 3)]


# ---------------------------------------------------------------------------- inputs that cannot work

def test_plain_rows_load_under_the_default_id_field(tmp_path):
    """data=demo sets id_field: id; plain {"instruction": ...} rows get <file stem>-<line> ids."""
    from selftaught import compose

    assert compose([]).data.id_field == "id"
    f = write_lines(tmp_path / "mine.jsonl", [b'{"instruction": "One"}', b'{"id": "x", "instruction": "Two"}',
                                              b'{"id": null, "instruction": "Three"}'])
    rows, rejects = load_instructions(DataConfig(path=str(f), id_field="id"))
    assert [r["id"] for r in rows] == ["mine-1", "x", "mine-3"] and rejects == []


@pytest.mark.parametrize("name,content,kw,message", [
    ("empty.jsonl", b"", {}, r"^data.path: {path} has no rows \(an empty file\)$"),
    ("blank.jsonl", b"\n  \n", {}, r"^data.path: {path} has no rows"),
    ("empty.json", b"[]", {}, r"^data.path: {path} has no rows"),
    ("prompts.jsonl", b'{"prompt": "a", "id": 1}\n{"prompt": "b"}\n[1]\n', {},
     r"^data.path: none of the 3 rows of {path} is usable \(2 missing field 'instruction', 1 row is not a JSON object "
     r"\(got list\)\); map the rows' fields \(the rows have prompt, id\): now data.instruction_field=instruction$"),
    ("nested.jsonl", b'{"turns": []}\n{"turns": [{"text": "a"}]}\n', {"instruction_field": "turns.0.content"},
     r"^data.path: none of the 2 rows .*\(2 missing field 'turns.0.content'\); .*now data.instruction_field=turns.0.content$"),
    ("lines.json", b'{"instruction": "a"}\n{"instruction": "b"}\n', {},
     r"^data.path: {path} holds JSON lines \(one object per line\), not one JSON document; set data.format=jsonl$"),
    ("one.json", b'{"instruction": "a"}', {}, r"^data.path: {path}: expected a top-level JSON list .*data.format=jsonl\)$"),
    ("data.csv", b"instruction\nhello\n", {},
     r"^data.path: cannot infer the format of {path} from suffix '.csv'; set data.format=jsonl\|json\|parquet \(CSV is not read"),
    ("data.txt", b"hello\n", {}, r"^data.path: cannot infer the format of {path} from suffix '.txt'; set data.format="),
    ("data.txt", b"hello\nworld\n", {"format": "jsonl"},
     r"^data.path: none of the 2 rows of {path} is usable \(2 invalid JSON\); read as jsonl: set data.format=jsonl\|json\|parquet"),
    ("fake.parquet", b"not parquet", {}, r"^data.path: {path} is not a parquet file .*set data.format="),
])
def test_a_file_that_gives_no_row_is_one_line_naming_the_key(tmp_path, name, content, kw, message):
    import re

    from selftaught.io import DataError, check_instructions

    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError, match=message.format(path=re.escape(str(f)))) as e:
        check_instructions(DataConfig(path=str(f), **kw))
    assert "\n" not in str(e.value)


def test_data_errors_name_the_file_they_are_about(tmp_path):
    """An extra file (data.also.N) is named by its own keys; a good file reports its counts."""
    from selftaught.config import DataSourceConfig, ConfigError
    from selftaught.io import DataError, check_instructions

    good = write_lines(tmp_path / "good.jsonl", [b'{"instruction": "a"}', b"{bad"])
    bad = write_lines(tmp_path / "bad.json", [b'{"q": "a"}', b'{"q": "b"}'])
    assert check_instructions(DataConfig(path=str(good))) == (1, 1)
    cfg = DataConfig(path=str(good), also=[DataSourceConfig(path=str(bad), instruction_field="q")])
    with pytest.raises(DataError, match="^data.also.0.path: .*bad.json holds JSON lines .*set data.also.0.format=jsonl$"):
        check_instructions(cfg)
    assert issubclass(DataError, ConfigError)  # the CLI exits 2 with it, one line


# ---------------------------------------------------------------------------- json / parquet

def test_json_input(tmp_path):
    f = tmp_path / "list.json"
    f.write_text(json.dumps([{"prompt": "a"}, "str", {"prompt": ""}, {"prompt": "b"}]))
    rows, rejects = load_instructions(DataConfig(path=str(f), instruction_field="prompt"))
    assert [(r["id"], r["source"]) for r in rows] == [("list-1", "list.json:1"), ("list-4", "list.json:4")]
    assert [(r.line, r.reason) for r in rejects] == [(2, "row is not a JSON object (got str)"), (3, "field 'prompt' is empty")]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"prompt": "a"},\n {"prompt": }]')
    with pytest.raises(ValueError, match=r"bad.json: invalid JSON at line 2 column"):
        load_instructions(DataConfig(path=str(bad), instruction_field="prompt"))
    obj = tmp_path / "obj.json"
    obj.write_text('{"prompt": "a"}')
    with pytest.raises(ValueError, match="top-level JSON list"):
        load_instructions(DataConfig(path=str(obj), instruction_field="prompt"))


def test_parquet_input_and_explicit_format(tmp_path):
    f = tmp_path / "rows.parquet"
    write_records(f, [{"q": {"text": "first"}}, {"q": None}, {"q": {"text": "third"}}])
    rows, rejects = load_instructions(DataConfig(path=str(f), instruction_field="q.text"))
    assert [(r["instruction"], r["source"]) for r in rows] == [("first", "rows.parquet:1"), ("third", "rows.parquet:3")]
    assert [(r.line, r.reason) for r in rejects] == [(2, "missing field 'q.text'")]
    odd = tmp_path / "rows.data"
    odd.write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match="cannot infer the format"):
        load_instructions(DataConfig(path=str(odd), instruction_field="q.text"))
    assert len(load_instructions(DataConfig(path=str(odd), format="parquet", instruction_field="q.text"))[0]) == 2


# ---------------------------------------------------------------------------- real shared data

def test_arena_hard():
    p = shared("instructions/arena_hard_v0.1_question.jsonl")
    rows, rejects = load_instructions(DataConfig(path=str(p), instruction_field="turns.0.content", id_field="question_id"))
    assert len(rows) == 500 and rejects == []
    assert rows[0]["id"] == "328c149ed45a41c0b9d6f14659e63599"
    assert rows[0]["instruction"] == "Use ABC notation to write a melody in the style of a folk tune."


def test_self_instruct():
    p = shared("instructions/self_instruct_seed_tasks.jsonl")
    cfg = DataConfig(path=str(p), input_field="instances.0.input", id_field="id")
    rows, rejects = load_instructions(cfg)
    assert len(rows) == 175 and rejects == []
    raw = [json.loads(line) for line in p.read_text().splitlines()]
    with_input = [r for r in raw if r["instances"][0]["input"].strip()]
    assert 0 < len(with_input) < 175
    by_id = {r["id"]: r["instruction"] for r in rows}
    for r in raw:
        inp = r["instances"][0]["input"].strip()
        want = r["instruction"].strip() + (f"\n\n{inp}" if inp else "")
        assert by_id[r["id"]] == want
    assert len(load_instructions(DataConfig(path=str(p), limit=7))[0]) == 7


def test_llmbar_natural():
    p = shared("eval/llmbar/Natural.json")
    rows, rejects = load_pairwise_eval(str(p))
    assert len(rows) == 100 and rejects == []
    raw = json.loads(p.read_text())
    for row, r in zip(rows, raw):
        win, lose = ("output_1", "output_2") if str(r["label"]) == "1" else ("output_2", "output_1")
        assert (row["instruction"], row["chosen"], row["rejected"]) == (r["input"], r[win], r[lose])
        assert row["subset"] == "Natural"
    assert rows[0]["id"] == "Natural-1" and rows[0]["source"] == "Natural.json:1"


def test_pairwise_rewardbench_and_rejects(tmp_path):
    f = tmp_path / "rb.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"id": 7, "prompt": "p", "chosen": "good", "rejected": "bad", "subset": "llmbar-natural"},
        {"input": "i", "output_1": "a", "output_2": "b", "label": "2"},
        {"input": "i", "output_1": "a", "output_2": "b", "label": 3},
        {"prompt": "p", "chosen": "", "rejected": "bad"},
        {"question": "?"},
    ]))
    rows, rejects = load_pairwise_eval(str(f))
    assert rows == [
        {"id": "7", "instruction": "p", "chosen": "good", "rejected": "bad", "subset": "llmbar-natural", "source": "rb.jsonl:1"},
        {"id": "rb-2", "instruction": "i", "chosen": "b", "rejected": "a", "subset": "rb", "source": "rb.jsonl:2"},
    ]
    assert [(r.line, r.reason.split(",")[0]) for r in rejects] == [
        (3, "field 'label' must be 1 or 2"), (4, "field 'chosen' is empty"), (5, "unrecognized row: expected LLMBar {input")]


def _conv(q1, a1, q2=None, a2=None):
    conv = [{"role": "user", "content": q1}, {"role": "assistant", "content": a1}]
    if q2 is not None:
        conv += [{"role": "user", "content": q2}, {"role": "assistant", "content": a2}]
    return conv


def test_mt_bench_human_votes(tmp_path):
    """Hand-written rows in the layout of lmsys/mt_bench_human_judgments (human split)."""
    base = {"question_id": 81, "model_a": "gpt-4", "model_b": "llama-13b", "judge": "author_2"}
    rows_in = [
        {**base, "winner": "model_a", "turn": 1, "conversation_a": _conv("Write a haiku.", "Leaves fall..."),
         "conversation_b": _conv("Write a haiku.", "A haiku is a poem.")},
        {**base, "winner": "model_b", "turn": 2,
         "conversation_a": _conv("Plan a trip.", "Day 1: Rome.", "Make it shorter.", "Rome, then Paris, then more."),
         "conversation_b": _conv("Plan a trip.", "Go to Rome.", "Make it shorter.", "Rome.")},
        {**base, "judge": "author_3", "winner": "tie", "turn": 1, "conversation_a": _conv("q", "x"),
         "conversation_b": _conv("q", "y")},
        {**base, "judge": "author_4", "winner": "tie (bothbad)", "turn": 1, "conversation_a": _conv("q", "x"),
         "conversation_b": _conv("q", "y")},
        {**base, "judge": "author_5", "winner": "model_a", "turn": 2, "conversation_a": _conv("q", "x"),
         "conversation_b": _conv("q", "y")},  # no second turn in the conversation
        {**base, "judge": "author_6", "winner": "model_a", "turn": 1, "conversation_a": _conv("q", "same"),
         "conversation_b": _conv("q", "same ")},
    ]
    f = tmp_path / "mt_bench_human.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows_in))
    rows, rejects = load_pairwise_eval(str(f))
    assert [(r["id"], r["subset"]) for r in rows] == [("81-gpt-4-llama-13b-author_2-t1", "turn1"),
                                                       ("81-gpt-4-llama-13b-author_2-t2", "turn2")]
    assert (rows[0]["instruction"], rows[0]["chosen"], rows[0]["rejected"]) == (
        "Write a haiku.", "Leaves fall...", "A haiku is a poem.")
    # turn 2: the whole conversation; the winner is model_b
    assert rows[1]["instruction"] == "Plan a trip.\n\n[Follow-up question]\nMake it shorter."
    assert rows[1]["chosen"] == "[First answer]\nGo to Rome.\n\n[Answer to the follow-up]\nRome."
    assert rows[1]["rejected"].endswith("Rome, then Paris, then more.")
    assert [(r.line, r.reason) for r in rejects] == [
        (3, "tie vote (excluded from accuracy)"), (4, "tie vote (excluded from accuracy)"),
        (5, "field 'conversation_a' must hold 4 messages for turn 2"), (6, "the two responses are identical")]


def test_identical_answers_are_rejected_in_every_format(tmp_path):
    f = tmp_path / "same.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"input": "i", "output_1": "a", "output_2": " a", "label": "1"},
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
    ]))
    rows, rejects = load_pairwise_eval(str(f))
    assert len(rows) == 1 and [r.reason for r in rejects] == ["the two responses are identical"] * 2


# ---------------------------------------------------------------------------- record files

RECORDS = [
    {"id": "1", "meta": {"cat": "Coding", "scores": [1, 2]}, "judgments": [{"verdict": "A", "text": "x"}], "note": None},
    {"id": "2", "meta": {"cat": "Open QA", "scores": []}, "judgments": [], "extra": 3.5},  # no "note"
]


def test_records_round_trip(tmp_path):
    p = tmp_path / "out" / "stage.parquet"  # parent created on demand
    write_records(p, RECORDS)
    got = read_records(p)
    # Union of keys: a field missing from a record reads back as None.
    assert got == [{**r, **{k: None for k in ("note", "extra") if k not in r}} for r in RECORDS]
    assert [x.name for x in p.parent.iterdir()] == ["stage.parquet"]  # no tmp file left
    write_records(tmp_path / "empty.parquet", [])
    assert read_records(tmp_path / "empty.parquet") == []


def test_records_load_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    p = tmp_path / "stage.parquet"
    write_records(p, RECORDS)
    ds = datasets.load_dataset("parquet", data_files=str(p), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 2 and ds[0]["meta"] == {"cat": "Coding", "scores": [1, 2]}
    assert ds[1]["note"] is None and ds[0]["judgments"][0]["verdict"] == "A"


def test_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "stage.parquet"
    write_records(p, RECORDS)
    with pytest.raises(ValueError, match="column 'x'"):
        write_records(p, [{"x": 1}, {"x": "str"}])
    assert read_records(p)[0]["id"] == "1" and len(list(tmp_path.iterdir())) == 1


def test_jsonl_round_trip(tmp_path):
    p = tmp_path / "a" / "rows.jsonl"
    rows = [{"id": "1", "text": "héllo\nworld", "nested": {"k": [1, None]}}, {"id": "2"}]
    write_jsonl(p, rows)
    assert read_jsonl(p) == rows
    p.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: invalid JSON"):
        read_jsonl(p)


def test_reject_is_plain_dataclass():
    r = Reject("f.jsonl", 3, "not valid UTF-8", "\\xff")
    assert "line=3" in repr(r)
