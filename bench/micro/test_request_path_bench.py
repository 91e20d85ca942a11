"""The Python cost of one proxied request through the real path (in-memory transports):
observability off, metrics only, metrics + access log. Compare the variants within one
run; the difference is what observability costs on the hot path (issue: ≤ 10%).

    python -m pytest bench/micro/test_request_path_bench.py --benchmark-only
"""
import pytest

from smg.testing.pathbench import PathBench


@pytest.mark.parametrize("metrics, access", [(False, False), (True, False), (True, True)],
                         ids=["bare", "metrics", "metrics+access_log"])
def test_proxied_request(benchmark, metrics, access):
    pb = PathBench(metrics, access)
    pb.one()
    assert pb.worker.inflight == 0 and not pb.proto.answering  # the request really completed
    benchmark(pb.one)
    assert pb.worker.processed > 1
    pb.close()


@pytest.mark.parametrize("metrics, access", [(False, False), (True, False), (True, True)],
                         ids=["bare", "metrics", "metrics+access_log"])
def test_proxied_stream(benchmark, metrics, access):
    pb = PathBench(metrics, access)
    pb.one_stream()
    assert pb.worker.inflight == 0 and not pb.proto.answering
    benchmark(pb.one_stream)
    pb.close()
