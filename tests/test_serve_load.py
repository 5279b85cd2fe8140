"""benchmarks/serve_load.py judges the serving target: served p50 at most in-process + 5 ms at
concurrency 1, and at least 2x the throughput at the highest concurrency."""

from benchmarks.serve_load import judge


def run(p50: float, rps: float) -> dict:
    return {"p50": p50, "p99": p50, "rps": rps}


def test_the_target_is_an_absolute_allowance_and_a_throughput_gain():
    local = {e: {"c1": run(p50, 0)} for e, p50 in (("caption", 67.9), ("retrieve", 1.4), ("embed", 1.4), ("vqa", 9))}
    served = {
        "caption": {1: run(68.6, 14), 32: run(300, 41)},  # +0.7 ms, 2.9x: met (the measurement)
        "retrieve": {1: run(4.1, 240), 32: run(20, 612)},  # +2.7 ms (+193%), 2.55x: met
        "embed": {1: run(6.5, 150), 32: run(20, 600)},  # +5.1 ms: not met
        "vqa": {1: run(10, 100), 32: run(40, 199)},  # 1.99x: not met
    }
    verdicts = dict(zip(local, judge(local, served, [1, 32])))
    assert [met for _, met in verdicts.values()] == [True, True, False, False]
    assert "+2.7 ms" in verdicts["retrieve"][0] and "2.55x" in verdicts["retrieve"][0]
