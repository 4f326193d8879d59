"""Engines that outlive their stage: on Ray, consecutive stages on one model are served by the same engine
actor; another model, ``close`` or ``ray.keep_engines=false`` end it."""
import os
import shutil
import sys

import pytest

from selftaught import rows
from selftaught.config import EngineConfig, RayConfig
from selftaught.distributed.generation import RayRunner
from selftaught.engines import GenRequest, Sampling
from selftaught.io import read_records, write_records
from selftaught.stages.base import OK, StageContext, StageSpec

pytestmark = pytest.mark.slow


def _pid_echo(records: list[dict], engine, ctx, c) -> list[dict]:
    """Each row generates on the stage's engine, then carries the pid of the process that served it."""
    res = engine.generate([GenRequest(r["id"], [{"role": "user", "content": r["instruction"]}], Sampling(max_tokens=2))
                           for r in records])
    assert len(res) == len(records)
    return [{**r, "instruction": str(os.getpid()), "status": OK} for r in records]


ECHO = StageSpec(name="echo", process=_pid_echo, row_type=rows.Instruction, engine="judge")


@pytest.fixture(autouse=True)
def _stage_by_value():
    """The actors cannot import this test module: its stage function travels by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture()
def shard(tmp_path):
    p = tmp_path / "in.parquet"
    write_records(p, [{"id": "a", "instruction": "Say hi."}, {"id": "b", "instruction": "Say yo."}])
    return str(p)


def _stage(runner: RayRunner, out, name: str, shard: str, model: str) -> set[str]:
    ctx = StageContext(round=1, model_path=model, constrained=False, max_model_len=512, seed=0)
    committed = []
    runner.run(ECHO, str(out / name), [(0, shard)], None, ctx, name, commit=committed.append, total=2)
    assert [e["out"] for e in committed] == [2]
    return {r["instruction"] for r in read_records(out / name / "data")}


def test_a_pool_serves_consecutive_stages_on_its_model(tmp_path, shard, tiny_model_path, ray_local):
    import ray

    runner = RayRunner(EngineConfig(backend="hf", threads=1), RayConfig(num_cpus=2, batch_size=8))
    first = _stage(runner, tmp_path, "s1", shard, tiny_model_path)
    actor = runner.pool.actors[0]
    second = _stage(runner, tmp_path, "s2", shard, tiny_model_path)
    assert runner.starts == 1 and first == second and len(first) == 1  # one actor process served both stages

    other = shutil.copytree(tiny_model_path, tmp_path / "other_model")  # another model: a new pool, the old one ends
    third = _stage(runner, tmp_path, "s3", shard, str(other))
    assert runner.starts == 2 and third != first
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.close.remote(), timeout=60)
    runner.close()
    assert runner.pool is None


def test_keep_engines_false_starts_a_pool_per_stage(tmp_path, shard, tiny_model_path, ray_local):
    runner = RayRunner(EngineConfig(backend="hf", threads=1), RayConfig(num_cpus=2, batch_size=8), keep=False)
    first = _stage(runner, tmp_path, "s1", shard, tiny_model_path)
    assert runner.pool is None  # ended with its stage
    second = _stage(runner, tmp_path, "s2", shard, tiny_model_path)
    assert runner.starts == 2 and first != second
