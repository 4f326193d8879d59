"""Resume markers: a stage is complete only with its marker and the same config hash."""
import json

from selftaught.config import JudgeConfig, SelectConfig, config_hash
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
