"""The cluster config group (selftaught/conf/cluster/) and the checks that a config fits its Ray cluster."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from selftaught import compose
from selftaught.cli import CONF_DIR
from selftaught.config import ConfigError, EngineConfig, RayConfig, check_shared_storage
from selftaught.distributed.generation import _TensorParallelPlacement, check_generation_resources, replica_resources

CONF = Path(CONF_DIR)
# `cluster=X` once selftaught/conf/config.yaml lists `cluster: null` in its defaults; `+cluster=X` before.
_GROUP = "cluster" if "- cluster:" in (CONF / "config.yaml").read_text() else "+cluster"


def cluster(name: str, *more: str):
    return compose([f"{_GROUP}={name}", *more])


def test_group_files():
    assert sorted(p.stem for p in (CONF / "cluster").glob("*.yaml")) == ["gpu_node", "local", "multi_node"]
    for p in (CONF / "cluster").glob("*.yaml"):
        assert p.read_text().startswith("# @package _global_"), p


def test_local():
    cfg = cluster("local")
    assert cfg.ray.address is None and cfg.ray.num_gpus_per_actor == 0 and cfg.ray.concurrency == 1
    assert cfg.engine.tensor_parallel_size == 1 and not cfg.train.use_gpu
    check_shared_storage(cfg.output_dir, cfg.ray)  # a relative output_dir is fine on one machine


def test_gpu_node():
    cfg = cluster("gpu_node", "rounds=3")
    assert cfg.rounds == 3
    assert (cfg.ray.concurrency, cfg.ray.num_gpus_per_actor, cfg.engine.tensor_parallel_size) == (8, 1.0, 1)
    assert cfg.engine.backend == "vllm"
    t = cfg.train
    assert (t.use_gpu, t.num_workers, t.gpus_per_worker, t.strategy, t.deepspeed) == (True, 8, 1.0, "zero2", "zero2.json")
    assert replica_resources(cfg.engine, cfg.ray) == (1.0, 2.0)
    # overrides on top of the group still win
    cfg = cluster("gpu_node", "ray.concurrency=4", "train.num_workers=4")
    assert cfg.ray.concurrency == 4 and cfg.train.num_workers == 4


def test_multi_node(monkeypatch):
    monkeypatch.delenv("SELFTAUGHT_STORAGE", raising=False)
    monkeypatch.delenv("SELFTAUGHT_CACHE", raising=False)
    cfg = cluster("multi_node")
    assert cfg.ray.address == "auto"
    assert cfg.engine.tensor_parallel_size == 4 and cfg.ray.concurrency == 4
    assert cfg.train.strategy == "zero3" and cfg.train.use_gpu and cfg.train.num_workers == 16
    assert cfg.output_dir == "/mnt/shared/selftaught" and cfg.model.cache_dir == "/mnt/shared/selftaught/.cache"
    assert replica_resources(cfg.engine, cfg.ray) == (4.0, 4.0)  # TP GPUs, 1 CPU per TP worker
    check_shared_storage(cfg.output_dir, cfg.ray)

    monkeypatch.setenv("SELFTAUGHT_STORAGE", "/lustre/me/st")
    cfg = cluster("multi_node")
    assert cfg.output_dir == "/lustre/me/st" and cfg.model.cache_dir == "/lustre/me/st/.cache"

    # multi_node needs an absolute output_dir: a relative one is refused with the config, naming the key.
    with pytest.raises(ConfigError, match=r"^output_dir: must be an absolute path .*got 'runs'"):
        cluster("multi_node", "output_dir=runs")
    with pytest.raises(ConfigError, match=r"^output_dir: must be an absolute path .*got 'runs'"):
        check_shared_storage("runs", cfg.ray)
    assert cluster("multi_node", "output_dir=runs", "ray.enabled=false").output_dir == "runs"  # no cluster, no need


def test_checks_without_cluster():
    with pytest.raises(ConfigError, match="engine.tensor_parallel_size: 2 needs engine.backend=vllm"):
        check_generation_resources(EngineConfig(backend="hf", tensor_parallel_size=2), RayConfig())
    served = EngineConfig(backend="openai", base_url="http://h/v1", api_model="m")  # checked when built
    assert replica_resources(served, RayConfig(num_gpus_per_actor=1)) == (0.0, 1.0)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    yield gpus
    if started:
        ray.shutdown()


def test_generation_resources_vs_local_ray(local_ray):
    if local_ray:
        pytest.skip("this Ray has GPUs; the messages below assume none")
    cfg = cluster("multi_node", "ray.concurrency=4", "engine.tensor_parallel_size=2")
    with pytest.raises(ConfigError) as e:
        check_generation_resources(cfg.engine, cfg.ray)
    assert str(e.value) == "ray.concurrency: 4 replicas x engine.tensor_parallel_size 2 = 8 GPUs, but the Ray cluster has 0"

    cfg = cluster("gpu_node")
    with pytest.raises(ConfigError, match=r"^ray.concurrency: 8 replicas x ray.num_gpus_per_actor 1 = 8 GPUs, but the Ray cluster has 0$"):
        check_generation_resources(cfg.engine, cfg.ray)
    # the generator's engine is checked under its own key
    with pytest.raises(ConfigError, match="generator.engine.tensor_parallel_size: 2 needs"):
        check_generation_resources(replace(cfg.engine, backend="hf", tensor_parallel_size=2), cfg.ray, key="generator.engine")

    # CPUs too: 3 replicas of 1 CPU on a 2-CPU Ray would wait forever
    cfg = cluster("local", "ray.concurrency=3")
    with pytest.raises(ConfigError, match=r"ray.concurrency: 3 replicas x 1 CPUs .* = 3 CPUs, but the Ray cluster has 2"):
        check_generation_resources(cfg.engine, cfg.ray)

    # what fits passes: the local group, a served generator (no GPUs on our side)
    check_generation_resources(cluster("local").engine, cluster("local").ray)
    check_generation_resources(EngineConfig(backend="openai", base_url="http://h/v1", api_model="m"),
                               RayConfig(concurrency=2, num_gpus_per_actor=1))


def test_tensor_parallel_placement_groups_released(local_ray):
    """The TP>1 path's placement groups (one per replica) are removed after the stage; here they
    stay pending (no GPUs), which is enough to see them created, named and released."""
    from ray.util import placement_group_table

    placer = _TensorParallelPlacement(EngineConfig(tensor_parallel_size=2), RayConfig(num_cpus_per_actor=1))
    assert placer.bundles == [{"GPU": 1.0, "CPU": 1.0}, {"GPU": 1.0, "CPU": 1.0}]
    args = [placer(), placer()]
    strategy = args[0]["scheduling_strategy"]
    assert strategy.placement_group_capture_child_tasks and strategy.placement_group.bundle_specs == placer.bundles

    def ours():
        return {i["name"]: i["state"] for i in placement_group_table().values() if i["name"].startswith(placer.prefix)}

    assert len(ours()) == 2 and "REMOVED" not in ours().values()
    placer.release()
    assert set(ours().values()) <= {"REMOVED"}
