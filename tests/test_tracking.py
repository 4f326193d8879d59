"""W&B tracking with the real wandb library in offline mode (no account, no network)."""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest

from selftaught.config import ConfigError, TrackingConfig
from selftaught.tracking import NoOpTracker, Tracker, drop_secrets, make_tracker

SECRETS = ("sk-SUPERSECRET-1", "hf_SECRETTOKEN_2", "hunter2-password", "client-SECRET-3")


@pytest.fixture(autouse=True)
def _wandb_env(tmp_path_factory, monkeypatch):
    """Keep wandb away from the network and from the user's home."""
    home = tmp_path_factory.mktemp("wandb_home")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DIR",
                "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("WANDB_SILENT", "true")


# ---------------------------------------------------------------------------- reading .wandb files
# wandb 0.31 offline writes no files/config.yaml; everything is in run-<id>.wandb: a leveldb-style log
# (7-byte file header ":W&B" + magic + version, 32 KiB blocks, 7-byte chunk headers crc/len/type)
# of serialized wandb_internal_pb2.Record protobufs.

def _records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if length == 0 and kind == 0:  # zero padding up to the block end
            pos += left - 7
            continue
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:
            full = chunk
        elif kind == 2:
            buf = chunk
            continue
        elif kind == 3:
            buf += chunk
            continue
        else:
            full, buf = buf + chunk, b""
        rec = pb.Record()
        rec.ParseFromString(full)
        yield rec


def _run_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def _history(path: Path) -> list[dict]:
    """[{key: value, ..., '_step': n}] from the history records of one .wandb file."""
    out = []
    for rec in _records(path):
        if rec.WhichOneof("record_type") == "history":
            row = {"/".join(it.nested_key) or it.key: json.loads(it.value_json) for it in rec.history.item}
            out.append(row)
    return out


def _config(path: Path) -> dict:
    cfg: dict = {}
    for rec in _records(path):
        kind = rec.WhichOneof("record_type")
        items = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else []
        for it in items:
            cfg["/".join(it.nested_key) or it.key] = json.loads(it.value_json)
    return cfg


# ---------------------------------------------------------------------------- tests

def _config_with_secrets() -> dict:
    return {
        "name": "demo", "api_key": SECRETS[0],
        "judge": {"max_tokens": 256, "n": 4, "hf_token": SECRETS[1], "tokenizer": "same"},
        "db": [{"password": SECRETS[2], "host": "h"}], "client_secret": SECRETS[3], "OPENAI_API_KEY": "x" * 8,
    }


def test_drop_secrets():
    clean = drop_secrets(_config_with_secrets())
    assert clean == {"name": "demo", "judge": {"max_tokens": 256, "n": 4, "tokenizer": "same"}, "db": [{"host": "h"}]}


def test_offline_run_resume_table_and_secrets(tmp_path, caplog):
    run_dir = tmp_path / "demo"
    cfg = TrackingConfig()  # wandb, offline
    t1 = make_tracker(cfg, run_dir, "demo", _config_with_secrets())
    assert isinstance(t1, Tracker) and t1.enabled
    s0 = t1.log({"eval/demo_eval/accuracy": 0.5, "judge/sft_examples": 3}, round=0)
    t1.log_train_history(1, [{"loss": 1.5, "learning_rate": 1e-5, "epoch": 0.5, "step": 1},
                             {"train_loss": 1.2, "epoch": 1.0, "step": 2, "note": "not a number"}])
    t1.log_table("judge/samples", [
        {"prompt": "p1", "answer_a": "a", "answer_b": "b", "judgment": "...", "verdict": "A", "gold": "A",
         "correct": True},
        {"prompt": "p2", "verdict": None, "gold": "B", "correct": False, "extra": {"scores": [1, 2]}},
    ], round=1)
    t1.log_summary({"best_accuracy": 0.5})
    last1 = t1.step
    assert s0 == 0 and last1 == 3
    run_id = t1.run_id
    t1.finish()
    t1.finish()  # idempotent

    state = json.loads((run_dir / "tracking.json").read_text())
    assert state["run_id"] == run_id and state["last_step"] == last1
    files = _run_files(run_dir)
    assert len(files) == 1 and files[0].name == f"run-{run_id}.wandb"
    assert files[0].parent.name.startswith("offline-run-") and files[0].parent.name.endswith(run_id)

    hist = _history(files[0])
    assert [h["_step"] for h in hist] == [0, 1, 2, 3]
    assert hist[0]["eval/demo_eval/accuracy"] == 0.5 and hist[0]["round"] == 0
    assert hist[1]["train/loss"] == 1.5 and hist[1]["train/learning_rate"] == 1e-5 and hist[1]["round"] == 1
    assert hist[2]["train/train_loss"] == 1.2 and "train/note" not in hist[2]
    assert any(k.startswith("judge/samples") for k in hist[3])
    tables = list(files[0].parent.glob("files/media/table/judge/samples_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["prompt", "answer_a", "answer_b", "judgment", "verdict", "gold", "correct", "extra"]
    assert table["data"][1][0] == "p2" and table["data"][1][1] is None and table["data"][1][-1] == '{"scores": [1, 2]}'

    # Secrets never reach the files wandb writes; the rest of the config does.
    config = _config(files[0])
    assert config["judge"] == {"max_tokens": 256, "n": 4, "tokenizer": "same"} and config["db"] == [{"host": "h"}]
    assert not {"api_key", "client_secret", "OPENAI_API_KEY"} & set(config)
    for f in run_dir.rglob("*"):
        if f.is_file():
            raw = f.read_bytes()
            assert not any(s.encode() in raw for s in SECRETS), f

    # A new process (a new Tracker) on the same run dir resumes the same run id and goes on counting.
    t2 = make_tracker(cfg, run_dir, "demo", {"name": "demo"})
    assert t2.run_id == run_id and t2.enabled
    s = t2.log({"eval/demo_eval/accuracy": 0.6}, round=2)
    assert s == last1 + 1
    t2.finish()
    first = files[0]
    files = _run_files(run_dir)
    assert len(files) == 2 and {f.name for f in files} == {f"run-{run_id}.wandb"}
    (resumed,) = [f for f in files if f != first]
    assert [h["_step"] for h in _history(resumed)] == [last1 + 1]
    assert json.loads((run_dir / "tracking.json").read_text())["last_step"] == last1 + 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("selftaught")]


@pytest.mark.parametrize("cfg", [TrackingConfig(backend="none"), TrackingConfig(mode="disabled")])
def test_disabled_tracker_is_a_noop(tmp_path, cfg):
    t = make_tracker(cfg, tmp_path / "run", "demo", {"api_key": "x"})
    assert isinstance(t, NoOpTracker) and not t.enabled
    assert t.log({"a": 1}) == 0 and t.log({"a": 2}, round=1) == 1
    t.log_train_history(0, [{"loss": 1.0}])
    t.log_table("t", [{"a": 1}])
    t.log_summary({"x": 1})
    t.finish()
    assert not (tmp_path / "run").exists()
    # The plain class honours the config too.
    t = Tracker(cfg, tmp_path / "run2", "demo", {})
    assert not t.enabled and t.log({"a": 1}) == 0
    assert not (tmp_path / "run2").exists()


def test_bad_config_values_raise():
    # checked once, by the config section itself (no second copy in the tracker)
    with pytest.raises(ConfigError, match="^tracking.backend: must be wandb|none, got 'mlflow'"):
        TrackingConfig(backend="mlflow")
    with pytest.raises(ConfigError, match="^tracking.mode: must be offline|online|disabled, got 'offlnie'"):
        TrackingConfig(mode="offlnie")


def test_wandb_failures_degrade_to_noop(tmp_path, monkeypatch, caplog):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", boom)
    with caplog.at_level(logging.WARNING, logger="selftaught.tracking"):
        t = make_tracker(TrackingConfig(), tmp_path / "a", "demo", {})
    assert not t.enabled and "no wandb today" in caplog.text
    assert t.log({"a": 1}) == 0
    t.finish()
    monkeypatch.undo()

    t = make_tracker(TrackingConfig(), tmp_path / "b", "demo", {})
    assert t.enabled
    monkeypatch.setattr(t._run, "log", boom)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="selftaught.tracking"):
        t.log({"a": 1}, round=0)
    assert not t.enabled and "log failed" in caplog.text
    t.log_table("x", [{"a": 1}])  # no-op now, no exception
    t.log_summary({"a": 1})
    t.finish()
