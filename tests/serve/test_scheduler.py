"""The fair scheduler (serve/scheduler.py) with a stand-in model: who shares a call, in which order, bounds,
deadlines, cancellation and faults. No server, no model: each test runs in well under a second."""

from __future__ import annotations

import asyncio
import time

import pytest

from compress.deploy.onnxrt import available_cores
from serve.scheduler import FairBatcher, Overloaded, bucket_of


class Model:
    """Records each call's payloads; a unit's output is its payload; each call sleeps `seconds`."""

    def __init__(self, seconds: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[list[tuple[str, int, int]]] = []
        self.seconds = seconds
        self.fail_on = fail_on

    def __call__(self, payloads):
        self.calls.append(list(payloads))
        if self.fail_on is not None and any(p[0] == self.fail_on for p in payloads):
            raise RuntimeError("the model broke")
        time.sleep(self.seconds)
        return list(payloads)


def units(name: str, lengths: list[int]):
    return [(name, i, n) for i, n in enumerate(lengths)], lengths


def run(coro):
    return asyncio.run(coro)


def test_buckets_are_powers_of_two_from_eight():
    assert [bucket_of(n) for n in (1, 8, 9, 16, 17, 100, 128, 129, 384)] == [8, 8, 16, 16, 32, 128, 128, 256, 512]


def test_each_request_gets_its_own_outputs_in_order():
    model = Model()
    b = FairBatcher(model, max_batch=8)

    async def main():
        reqs = [units(f"r{k}", [(7 * k + 3 * i) % 60 + 1 for i in range(k + 1)]) for k in range(12)]
        return reqs, await asyncio.gather(*(b.submit(p, n) for p, n in reqs))

    reqs, outs = run(main())
    for (payloads, _), got in zip(reqs, outs):
        assert got == payloads
    assert all(len(c) <= 8 for c in model.calls)


def test_a_call_holds_one_length_bucket_within_its_bounds():
    model = Model()
    b = FairBatcher(model, max_batch=16, max_tokens=256)

    async def main():
        await asyncio.gather(b.submit(*units("a", [5, 30, 60, 120, 7, 31] * 6)),
                             b.submit(*units("b", [12, 64, 3, 100] * 5)))

    run(main())
    for call in model.calls:
        assert len({bucket_of(n) for _, _, n in call}) == 1, call
        assert len(call) <= 16
        assert len(call) * max(n for _, _, n in call) <= 256 or len(call) == 1


def test_a_small_request_waits_for_at_most_the_call_in_flight():
    """Eight requests of 64 long inputs are queued; a one-text request sent meanwhile is in the very next call."""
    model = Model(seconds=0.01)
    b = FairBatcher(model, max_batch=8, max_tokens=8 * 128)
    done: dict[str, float] = {}

    async def timed(name, payloads, lengths):
        await b.submit(payloads, lengths)
        done[name] = time.perf_counter()

    async def main():
        heavy = [asyncio.create_task(timed(f"big{k}", *units(f"big{k}", [120] * 64))) for k in range(8)]
        await asyncio.sleep(0.03)  # the heavy ones are being served
        calls_before = len(model.calls)
        await timed("small", *units("small", [6]))
        small_calls = [i for i, c in enumerate(model.calls) if any(p[0] == "small" for p in c)]
        await asyncio.gather(*heavy)
        return calls_before, small_calls

    before, small_calls = run(main())
    assert small_calls[0] <= before + 1  # the call in flight, then the small one's
    assert done["small"] < min(v for k, v in done.items() if k != "small")


def test_big_requests_finish_one_after_another_and_single_texts_in_arrival_order():
    """The one closest to done goes first (not all late together); one-text requests keep their order whatever
    their lengths (ranking them by tokens would starve long texts under steady load)."""
    model = Model()
    b = FairBatcher(model, max_batch=4, max_call_s=None)

    async def main():
        first = asyncio.create_task(b.submit(*units("a", [20] * 40)))
        await asyncio.sleep(0)
        await asyncio.gather(first, b.submit(*units("b", [20] * 40)))

    run(main())
    assert [p[0] for call in model.calls for p in call] == ["a"] * 40 + ["b"] * 40

    model = Model()
    b = FairBatcher(model, max_batch=1)

    async def singles():
        await asyncio.gather(*(b.submit(*units(f"r{k}", [60 - 5 * k])) for k in range(10)))

    run(singles())
    assert [c[0][0] for c in model.calls] == [f"r{k}" for k in range(10)]


def test_a_call_is_a_time_slice_at_the_measured_speed():
    """After the first call the scheduler knows the seconds per token; calls then hold what fits in max_call_s."""
    class Slow(Model):
        def __call__(self, payloads):
            self.calls.append(list(payloads))
            time.sleep(0.0002 * len(payloads) * max(p[2] for p in payloads))  # 0.2 ms per padded token
            return list(payloads)

    model = Slow()
    b = FairBatcher(model, max_batch=64, max_tokens=100000, max_call_s=0.02)
    run(b.submit(*units("a", [10] * 200)))
    assert len(model.calls[0]) == 64  # nothing measured yet: the hard bounds
    assert b.cost.line()[1] == pytest.approx(0.0002, rel=0.5)
    assert all(len(c) * 10 <= 0.02 / 0.0002 * 1.6 for c in model.calls[2:])  # about 100 tokens a call


def test_without_cross_request_batching_a_call_holds_one_request():
    model = Model()
    b = FairBatcher(model, max_batch=8, cross_request=False)

    async def main():
        await asyncio.gather(*(b.submit(*units(f"r{k}", [10, 11, 12])) for k in range(5)))

    run(main())
    assert all(len({p[0] for p in call}) == 1 for call in model.calls)
    assert len(model.calls) == 5


def test_a_request_past_its_deadline_is_overloaded_and_its_units_dropped():
    model = Model(seconds=0.05)
    b = FairBatcher(model, max_batch=1, max_wait_s=0.12)

    async def main():
        with pytest.raises(Overloaded, match="not served within 0.12 s"):
            await b.submit(*units("slow", [10] * 20))
        await asyncio.sleep(0.15)  # let the call in flight finish
        return b.queued_units

    assert run(main()) == 0
    assert sum(1 for c in model.calls for p in c if p[0] == "slow") <= 4


def test_a_cancelled_request_is_dropped_and_others_go_on():
    model = Model(seconds=0.01)
    b = FairBatcher(model, max_batch=2)

    async def main():
        gone = asyncio.create_task(b.submit(*units("gone", [10] * 30)))
        await asyncio.sleep(0.025)
        gone.cancel()
        out = await b.submit(*units("kept", [10, 10, 10]))
        return out, b.queued_units

    out, left = run(main())
    assert [p[0] for p in out] == ["kept"] * 3 and left == 0
    assert sum(1 for c in model.calls for p in c if p[0] == "gone") < 30


def test_a_model_fault_fails_only_the_requests_in_that_call():
    model = Model(fail_on="bad")
    b = FairBatcher(model, max_batch=4, cross_request=False)

    async def main():
        results = await asyncio.gather(b.submit(*units("bad", [10])), b.submit(*units("good", [10, 12])),
                                       return_exceptions=True)
        again = await b.submit(*units("after", [9]))
        return results, again

    (bad, good), again = run(main())
    assert isinstance(bad, RuntimeError) and [p[0] for p in good] == ["good", "good"] and again[0][0] == "after"


def test_the_metrics_hook_sees_real_and_padded_tokens():
    seen = []
    b = FairBatcher(Model(), max_batch=8, on_batch=lambda *a: seen.append(a))
    run(b.submit(*units("a", [10, 12, 16])))
    assert [(u, real, padded) for u, real, padded, _ in seen] == [(3, 38, 48)]


def test_available_cores_reads_a_cgroup_quota(tmp_path):
    mine = available_cores(str(tmp_path))  # no cpu.max there: the affinity
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert available_cores(str(tmp_path)) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores(str(tmp_path)) == mine
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert available_cores(str(tmp_path)) == mine


@pytest.mark.parametrize("env, words", [
    ({"COMPRESS_WORKERS": "{over}", "COMPRESS_THREADS": "1"}, "cores this process may use"),
    ({"COMPRESS_MAX_BATCH_TOKENS": "lots"}, "COMPRESS_MAX_BATCH_TOKENS='lots' is not a whole number"),
])
def test_settings_the_service_cannot_start_with_are_refused_without_a_traceback(tmp_path, env, words):
    """More threads x workers than cores (they would slow each other down), or a setting that is not a number."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    over = str(available_cores() + 1)
    full = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true",
            **{k: v.format(over=over) for k, v in env.items()}}
    out = subprocess.run([sys.executable, "-c", "import serve.service"], cwd=ROOT, env=full, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("env, expect", [
    ({}, lambda cores: (cores, 1)),  # BentoML's "cpu_count": one single-threaded worker per core
    ({"COMPRESS_THREADS": "{cores}"}, lambda cores: (1, cores)),  # threads given alone: workers fill the rest
    ({"COMPRESS_WORKERS": "1"}, lambda cores: (1, cores)),
])
def test_workers_and_threads_default_to_the_cores(tmp_path, env, expect):
    """The defaults never put more ONNX Runtime threads than cores, and fill them (benchmarks/results/serve.md)."""
    import os
    import subprocess
    import sys

    from compress.deploy.onnxrt import available_cores
    from tests.conftest import ROOT

    cores = available_cores()
    full = {k: v for k, v in os.environ.items() if k not in ("COMPRESS_WORKERS", "COMPRESS_THREADS")}
    full.update({"BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true",
                 **{k: v.format(cores=cores) for k, v in env.items()}})
    out = subprocess.run([sys.executable, "-c", "import serve.service as s; print(s.WORKERS, s.THREADS)"], cwd=ROOT,
                         env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert tuple(int(x) for x in out.stdout.split()[-2:]) == expect(cores)


def test_the_service_process_does_not_load_torch(tmp_path):
    """It runs ONNX Runtime and needs only the tokenizers: torch would cost each worker about 390 MB resident."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    full = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    full.pop("USE_TORCH", None)
    code = ("import os, sys, serve.service; print('torch' in sys.modules, 'transformers' in sys.modules, "
            "os.environ.get('USE_TORCH'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["False", "True", "None"]  # tokenizers yes, torch no, nothing left in env
    assert "None of PyTorch" not in out.stderr


def test_the_call_cost_line_separates_the_fixed_cost_from_the_tokens():
    """A model with 5 ms per call plus 0.1 ms per token: the slice then holds (40 - 5) / 0.1 tokens, not 40 / 0.15."""
    from serve.scheduler import CallCost

    cost = CallCost()
    assert cost.tokens_within(0.04) is None
    cost.add(100, 0.005 + 0.0001 * 100)
    assert cost.tokens_within(0.04) == int(0.04 / 0.00015)  # one size seen: all the time on the tokens
    for tokens in (20, 300, 50, 1000, 8, 640):
        cost.add(tokens, 0.005 + 0.0001 * tokens)
    fixed, per_token = cost.line()
    assert fixed == pytest.approx(0.005, rel=1e-3) and per_token == pytest.approx(0.0001, rel=1e-3)
    assert cost.tokens_within(0.04) == pytest.approx(350, abs=1)
