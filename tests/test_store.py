"""Resume markers: a stage is complete only with its marker and the same config hash."""
import json

from selftaught.config import JudgeConfig, SelectConfig, config_hash
from selftaught.io import read_records
from selftaught.store import MARKER, RoundStore


def test_marker_written_last_and_hash_checked(tmp_path):
    store = RoundStore(tmp_path, 0)
    h = config_hash("select", SelectConfig(limit=3))
    assert not store.is_complete("select", h)
    rows = [{"id": "a", "meta": {"tokens": 3}, "opt": None}, {"id": "b", "meta": {"tokens": 4}, "opt": "x"}]
    store.save("select", h, rows, [{"source": "f.jsonl:3", "reason": "bad"}], {"stage": "select", "out": 2})
    assert store.is_complete("select", h)
    assert not store.is_complete("select", config_hash("select", SelectConfig(limit=4)))
    assert store.rows("select") == rows
    assert store.failures("select") == [{"source": "f.jsonl:3", "reason": "bad"}]
    assert store.summary("select")["out"] == 2
    assert json.loads((store.dir("select") / MARKER).read_text())["hash"] == h


def test_partial_stage_is_not_complete_and_is_replaced(tmp_path):
    store = RoundStore(tmp_path, 1)
    d = store.dir("judge")
    d.mkdir(parents=True)
    (d / "data.parquet").write_bytes(b"half a file")  # killed mid-write: no marker
    h = config_hash("judge", JudgeConfig())
    assert not store.is_complete("judge", h)
    (d / MARKER).write_text("{not json")
    assert not store.is_complete("judge", h)
    store.save("judge", h, [{"x": 1}], [], {})
    assert store.is_complete("judge", h) and store.rows("judge") == [{"x": 1}]


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(JudgeConfig(n=4)) == config_hash(JudgeConfig(n=4))
    assert config_hash(JudgeConfig(n=4)) != config_hash(JudgeConfig(n=8))
    assert config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})


# -- shards -----------------------------------------------------------------------------------

def _spec():
    from selftaught.stages.base import StageSpec

    def process(records, engine, ctx, cfg):  # doubles each row; odd ids fail
        return [{"id": r["id"], "status": "ok" if r["id"] % 2 == 0 else "odd", "v": r["id"] * 2} for r in records]

    return StageSpec(name="double", process=process, shard_stats=lambda rows, cfg: {"n": len(rows), "max_v": max(r["v"] for r in rows)},
                     summarize=lambda st, cfg: {"rows_seen": st["n"], "max_v": st["max_v"]})


def test_shard_commit_resume_and_cleanup(tmp_path):
    from selftaught.io import write_records
    from selftaught.shards import merged, process_shard
    from selftaught.stages.base import StageContext
    from selftaught.store import StageDir

    inputs = []
    for i in range(3):
        p = tmp_path / "in" / f"part-{i:05d}.parquet"
        write_records(p, [{"id": 3 * i + j} for j in range(3)])
        inputs.append(p)
    sd, spec, ctx = StageDir(tmp_path / "double"), _spec(), StageContext(1, "m", False, 128)
    assert sd.open("h1", 3) == {}
    sd.commit(process_shard(spec, str(sd.root), 0, str(inputs[0]), None, ctx, None, batch_size=2))
    # Shard 1 was in flight when the run died: its files exist, its manifest line does not; a torn
    # manifest line and a tmp file are left too.
    process_shard(spec, str(sd.root), 1, str(inputs[1]), None, ctx, None, batch_size=2)
    with open(sd.root / "manifest.jsonl", "a") as f:
        f.write('{"shard": 1, "in"')
    (sd.root / "data" / ".part-00002.parquet.123.abcd.tmp").write_bytes(b"half")

    committed = sd.open("h1", 3)  # reopen: the same hash and shard size
    assert list(committed) == [0]
    assert not (sd.root / "data" / "part-00001.parquet").exists() and not list(sd.root.rglob("*.tmp"))
    for i in (1, 2):
        sd.commit(process_shard(spec, str(sd.root), i, str(inputs[i]), None, ctx, None, batch_size=2))
    entries = sd.entries()
    assert [e["shard"] for e in entries] == [0, 1, 2] and entries[0]["commit"] == committed[0]["commit"]
    tot = merged(entries)
    assert (tot["in"], tot["out"], tot["failed"], tot["failures"]) == (9, 5, 4, {"odd": 4})
    assert tot["stats"] == {"n": 9, "max_v": 16}
    assert [r["id"] for r in sd.rows()] == [0, 2, 4, 6, 8] and [r["id"] for r in sd.failures()] == [1, 3, 5, 7]
    assert sd.rows(["v", "absent"]) == [{"v": v, "absent": None} for v in (0, 4, 8, 12, 16)]

    # Another hash (a changed config) or shard size: the old shards are discarded whole, never mixed.
    assert sd.open("h2", 3) == {} and sd.entries() == [] and not sd.data_files()


def test_atomic_writer_and_log(tmp_path):
    from selftaught import atomic

    p = tmp_path / "a" / "x.json"
    atomic.write_json(p, {"k": 1})
    assert json.loads(p.read_text()) == {"k": 1} and not list(p.parent.glob(".*"))
    try:
        with atomic.atomic_path(p) as tmp:
            open(tmp, "w").write("partial")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert json.loads(p.read_text()) == {"k": 1} and not list(p.parent.glob(".*"))  # old content, no tmp
    log = tmp_path / "log.jsonl"
    atomic.append_line(log, json.dumps({"i": 0}))
    with open(log, "a") as f:
        f.write('{"i": 1}')  # complete JSON, but no newline: the append never finished
    assert atomic.read_log(log) == [{"i": 0}]
    atomic.append_line(log, json.dumps({"i": 2}))
    assert atomic.read_log(log) == [{"i": 0}, {"i": 2}]


def test_balance_by_thresholds_equals_in_memory_balance():
    from selftaught.stages.judge import BALANCED_OUT, balance, balance_key, balance_thresholds, balanced_in

    rows = [{"example_id": f"p{i}/{o}", "gold": "A" if o == "AB" else "B", "status": "ok"}
            for i in range(20) for o in (("AB", "BA") if i < 6 else ("AB",))]
    out = balance(rows, seed=3)
    kept = [r for r in out if r["status"] == "ok"]
    assert sum(r["gold"] == "A" for r in kept) == sum(r["gold"] == "B" for r in kept) == 6
    assert sum(r["status"] == BALANCED_OUT for r in out) == 14
    keys = {"A": [], "B": []}
    for r in rows:
        keys[r["gold"]].append(balance_key(3, r["example_id"]))
    t = balance_thresholds(keys)  # what the driver decides from shard columns alone
    assert [balanced_in(r, 3, t) for r in rows] == [r["status"] == "ok" for r in out]


def _sft_row(i: int, kept_source=None) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "[[A]]"}],
            "example_id": f"p{i}/AB", "pair_id": f"p{i}", "order": "AB", "verdict": "A", "kept_source": kept_source,
            "category": None, "template": "t@1", "status": "ok",
            "judge_meta": {"stage": "judge", "round": 1, "model": "m", "engine": "hf", "template": "t@1",
                           "constrained": True, "prompt_tokens": 5, "completion_tokens": 2,
                           "sampling": {"n": 1, "temperature": 0.7, "top_p": 1.0, "max_tokens": 8, "stop": [],
                                        "frequency_penalty": 0.0}}}


def test_stage_shards_share_one_schema_and_load_with_datasets(tmp_path):
    """Shards in the row type's schema: a zero-row stage loads (empty, its columns kept); a shard with no
    rows, or with a column all null, does not break loading the others; undeclared keys are kept."""
    import datasets

    from selftaught.rows import SftRow, arrow_schema
    from selftaught.store import StageDir

    datasets.disable_progress_bars()
    empty = StageDir(tmp_path / "empty")
    empty.write_shard(0, [], [], SftRow)
    # datasets 5.2 builds no split from zero rows ("corresponds to no data") whatever the file holds;
    # streamed, the file gives its columns and no row (pyarrow reads it as an empty table).
    ds = datasets.load_dataset("parquet", data_dir=str(empty.data_dir), split="train", streaming=True)
    assert list(ds.features) == arrow_schema(SftRow).names and list(ds) == []
    assert read_records(empty.data_dir) == []

    mixed = StageDir(tmp_path / "mixed")
    mixed.write_shard(0, [], [], SftRow)  # first, so its schema is the one datasets reads
    mixed.write_shard(1, [_sft_row(1)], [], SftRow)  # kept_source all null here
    mixed.write_shard(2, [_sft_row(2, "mirror")], [], SftRow)
    ds = datasets.load_dataset("parquet", data_dir=str(mixed.data_dir), split="train")
    assert ds.num_rows == 2 and ds["kept_source"] == [None, "mirror"]
    assert ds[0]["messages"][1] == {"role": "assistant", "content": "[[A]]"}
    assert read_records(mixed.data_dir)[0]["judge_meta"]["sampling"]["stop"] == []


def test_keys_outside_the_row_type_are_kept(tmp_path):
    from selftaught.rows import SftRow
    from selftaught.store import StageDir

    row = {**_sft_row(2, "mirror"), "undeclared": 3}
    row["judge_meta"] = {**row["judge_meta"], "also_undeclared": "x"}
    sd = StageDir(tmp_path / "x")
    sd.write_shard(0, [row], [], SftRow)
    (back,) = read_records(sd.data_dir)
    assert back["undeclared"] == 3 and back["judge_meta"]["also_undeclared"] == "x"
    assert back["judge_meta"]["sampling"]["temperature"] == 0.7
