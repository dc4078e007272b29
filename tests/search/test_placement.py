"""Where search workers run: one GPU each, or a share of the cores (pure logic, no GPU needed)."""

from __future__ import annotations

import pytest

from compress.search.placement import plan_workers, worker_slots


def test_each_worker_gets_its_own_gpu_and_a_share_of_the_cores():
    slots = worker_slots(4, "cuda", cores=16, gpus=["0", "1", "2", "3"])
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2", "3"]
    assert {s.threads for s in slots} == {4} and slots[0].env["OMP_NUM_THREADS"] == "4"
    # The machine's own numbering is kept when CUDA_VISIBLE_DEVICES already narrows it.
    slots = worker_slots(3, "cuda", cores=8, gpus=["2", "5"])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["2", "5", "2"]
    assert slots[2].describe() == "worker 2: cuda:2, 2 threads"


def test_cpu_workers_split_the_cores_without_oversubscribing():
    assert [s.threads for s in worker_slots(2, "cpu", cores=2, gpus=[])] == [1, 1]
    assert [s.threads for s in worker_slots(3, "cpu", cores=16, gpus=[])] == [5, 5, 5]
    assert all("CUDA_VISIBLE_DEVICES" not in s.env for s in worker_slots(2, "cpu", cores=4, gpus=[]))
    assert sum(s.threads for s in worker_slots(2, "cpu", cores=7, gpus=[])) <= 7
    with pytest.raises(ValueError, match="--workers 0"):
        worker_slots(0, "cpu", cores=2, gpus=[])
    with pytest.raises(ValueError, match="no GPU is visible"):
        worker_slots(2, "cuda", cores=2, gpus=[])


def test_plan_for_this_machine(caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU split")
    slots = plan_workers("auto", 2, threads=2)
    assert [(s.device, s.threads) for s in slots] == [("cpu", 1), ("cpu", 1)]
    plan_workers("cpu", 5, threads=2)
    assert "5 workers on 2 cores" in caplog.text


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a GPU")
def test_plan_on_a_gpu_machine_uses_the_gpus():
    import torch

    slots = plan_workers("auto", torch.cuda.device_count(), threads=None)
    assert len({s.env["CUDA_VISIBLE_DEVICES"] for s in slots}) == torch.cuda.device_count()
