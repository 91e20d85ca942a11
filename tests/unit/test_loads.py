"""Engine load reports: /v1/loads, /get_load and Prometheus parsing; the monitor."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.config.schema import GatewayConfig
from smg.errors import UpstreamError
from smg.testing.mock_worker import MockConfig, MockWorker
from smg.workers import loads as L
from smg.workers.loads import LoadMonitor
from smg.workers.worker import Worker

CFG = GatewayConfig()


def monitor(on_load, **kw) -> LoadMonitor:
    """A monitor with the settings table's values except those given."""
    return LoadMonitor.from_config(CFG, on_load, **kw)


def run(coro, timeout: float = 10.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# -- /v1/loads

V1 = {"timestamp": 1700000000.5, "version": "0.5", "dp_rank_count": 2, "loads": [
    {"dp_rank": 0, "num_running_reqs": 3, "num_waiting_reqs": 1, "num_total_reqs": 4,
     "num_waiting_uncached_tokens": 500, "num_used_tokens": 1000, "max_total_num_tokens": 4000,
     "token_usage": 0.25, "gen_throughput": 100.0, "cache_hit_rate": 0.5, "utilization": 0.2,
     "max_running_requests": 128},
    {"dp_rank": 1, "num_running_reqs": 5, "num_waiting_reqs": 0, "num_total_reqs": 5,
     "num_waiting_uncached_tokens": 400, "num_used_tokens": 3000, "max_total_num_tokens": 4000,
     "token_usage": 0.75, "gen_throughput": 300.0, "cache_hit_rate": 0.3, "utilization": 0.6,
     "max_running_requests": 128, "disagg_mode": "prefill", "kv_transfer_latency_ms": 4.0},
], "aggregate": {"total_running_reqs": 8}}


def test_v1_loads_aggregates_ranks():
    r = L.parse_v1_loads(V1)
    assert r["num_running_reqs"] == 8 and isinstance(r["num_running_reqs"], int)
    assert r["num_waiting_reqs"] == 1
    assert r["num_total_reqs"] == 9
    assert r["num_waiting_uncached_tokens"] == 900
    assert r["gen_throughput"] == 400.0
    assert r["token_usage"] == pytest.approx(0.5)  # 4000 / 8000, not the mean of ratios by luck
    assert r["cache_hit_rate"] == pytest.approx(0.4)
    assert r["utilization"] == pytest.approx(0.4)
    assert r["max_running_requests"] == 256
    assert r["disagg_mode"] == "prefill"
    assert r["kv_transfer_latency_ms"] == 4.0
    assert r["dp_rank_count"] == 2 and [x["dp_rank"] for x in r["loads"]] == [0, 1]
    assert r["timestamp"] == 1700000000.5 and r["source"] == "v1/loads"


def test_v1_loads_token_usage_weighted():
    obj = {"loads": [{"num_used_tokens": 100, "max_total_num_tokens": 1000, "token_usage": 0.1},
                     {"num_used_tokens": 900, "max_total_num_tokens": 1000, "token_usage": 0.9}]}
    assert L.parse_v1_loads(obj)["token_usage"] == pytest.approx(0.5)
    obj = {"loads": [{"token_usage": 0.2}, {"token_usage": 0.4}]}
    assert L.parse_v1_loads(obj)["token_usage"] == pytest.approx(0.3)


def test_v1_loads_nested_groups_and_derived_total():
    obj = {"loads": [{"dp_rank": 0, "core": {"num_running_reqs": 2, "num_waiting_reqs": 3},
                      "memory": {"token_usage": 0.5}, "junk": "x"}]}
    r = L.parse_v1_loads(obj)
    assert (r["num_running_reqs"], r["num_waiting_reqs"], r["num_total_reqs"], r["token_usage"]) == (2, 3, 5, 0.5)


def test_v1_loads_only_reported_fields():
    r = L.parse_v1_loads({"loads": [{"num_running_reqs": 1}]})
    assert "gen_throughput" not in r and "token_usage" not in r
    assert r["num_running_reqs"] == 1


@pytest.mark.parametrize("bad", [[], {}, {"loads": 3}, {"loads": [1]}, "x", None])
def test_v1_loads_bad_shapes(bad):
    with pytest.raises(ValueError):
        L.parse_v1_loads(bad)


def test_v1_loads_ignores_non_numbers():
    r = L.parse_v1_loads({"loads": [{"num_running_reqs": "7", "token_usage": "nan?", "gen_throughput": True}]})
    assert r["num_running_reqs"] == 7
    assert "token_usage" not in r and "gen_throughput" not in r


# -- /get_load (legacy)

def test_get_load_list():
    r = L.parse_get_load([{"dp_rank": 0, "num_reqs": 5, "num_waiting_reqs": 2, "num_tokens": 700},
                          {"dp_rank": 1, "num_reqs": 1, "num_waiting_reqs": 0, "num_tokens": 10}])
    assert (r["num_total_reqs"], r["num_running_reqs"], r["num_waiting_reqs"], r["num_used_tokens"]) == \
        (6, 4, 2, 710)
    assert r["source"] == "get_load" and r["dp_rank_count"] == 2


def test_get_load_old_router_shape_and_v1_shape():
    assert L.parse_get_load({"load": 4})["num_running_reqs"] == 4
    assert L.parse_get_load(V1)["num_running_reqs"] == 8
    assert L.parse_get_load(V1)["source"] == "get_load"
    with pytest.raises(ValueError):
        L.parse_get_load({"load": "many"})
    with pytest.raises(ValueError):
        L.parse_get_load(7)


# -- Prometheus text

SGLANG_TEXT = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="0"} 3.0
sglang:num_running_reqs{model_name="m",tp_rank="1",dp_rank="0"} 3.0
sglang:num_running_reqs{model_name="m",tp_rank="0",dp_rank="1"} 4.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m",dp_rank="0"} 2.0
sglang:num_queue_reqs{model_name="m",dp_rank="1"} 0.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m",dp_rank="0"} 0.2
sglang:token_usage{model_name="m",dp_rank="1"} 0.6
# TYPE sglang:gen_throughput gauge
sglang:gen_throughput{model_name="m",dp_rank="0"} 100.0
sglang:gen_throughput{model_name="m",dp_rank="1"} 50.0
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="m",dp_rank="0"} 0.5
sglang:cache_hit_rate{model_name="m",dp_rank="1"} 0.1
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="m"} 12345.0
"""


def test_sglang_metrics():
    r = L.parse_metrics(SGLANG_TEXT)
    assert r["num_running_reqs"] == 7        # tp copies not double counted; dp ranks summed
    assert r["num_waiting_reqs"] == 2
    assert r["num_total_reqs"] == 9
    assert r["token_usage"] == pytest.approx(0.4)
    assert r["gen_throughput"] == 150.0
    assert r["cache_hit_rate"] == pytest.approx(0.3)
    assert r["dp_rank_count"] == 2 and r["source"] == "metrics"


def test_sglang_underscore_prefix_without_labels():
    text = "sglang_num_running_reqs 2\nsglang_num_queue_reqs 1\nsglang_token_usage 0.3\nsglang_utilization 0.9\n"
    r = L.parse_sglang_metrics(text)
    assert (r["num_running_reqs"], r["num_waiting_reqs"], r["token_usage"], r["utilization"]) == (2, 1, 0.3, 0.9)
    assert r["dp_rank_count"] == 1


VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 6.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.3
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 200.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 100.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 50.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 50.0
"""


def test_vllm_metrics():
    r = L.parse_metrics(VLLM_TEXT)
    assert (r["num_running_reqs"], r["num_waiting_reqs"], r["num_total_reqs"]) == (8, 4, 12)
    assert r["token_usage"] == pytest.approx(0.4)
    assert r["cache_hit_rate"] == pytest.approx((0.25 + 0.5) / 2)
    assert r["dp_rank_count"] == 2


def test_vllm_old_gauge_names():
    text = ('vllm:num_requests_running{model_name="m"} 1\nvllm:num_requests_waiting{model_name="m"} 0\n'
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.7\nvllm:gpu_prefix_cache_hit_rate{model_name="m"} 0.2\n')
    r = L.parse_vllm_metrics(text)
    assert (r["num_running_reqs"], r["token_usage"], r["cache_hit_rate"]) == (1, 0.7, 0.2)


def test_runtime_choice_when_both_present():
    both = SGLANG_TEXT + VLLM_TEXT
    assert L.parse_metrics(both)["num_running_reqs"] == 7
    assert L.parse_metrics(both, "sglang")["num_running_reqs"] == 7
    assert L.parse_metrics(both, "vllm")["num_running_reqs"] == 8


def test_metrics_without_load_gauges():
    assert L.parse_metrics("process_cpu_seconds_total 1.0\n") is None
    assert L.parse_metrics("") is None


def test_metrics_garbage_raises_value_error():
    with pytest.raises(ValueError):
        L.parse_report(L.SOURCE_METRICS, b"sglang:num_running_reqs{ 3\n")
    with pytest.raises(ValueError):
        L.parse_report(L.SOURCE_METRICS, b"\xff\xfe")
    with pytest.raises(ValueError):
        L.parse_report(L.SOURCE_V1_LOADS, b"not json")


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=300),
                      st.text(alphabet=st.sampled_from('sglangvm:_{}="0123456789. \n#TYPE,a'), max_size=300)
                      .map(str.encode)),
       source=st.sampled_from([L.SOURCE_V1_LOADS, L.SOURCE_GET_LOAD, L.SOURCE_METRICS]))
def test_parse_report_fuzz(body, source):
    # Invariant: a report, None, or ValueError; never any other exception.
    try:
        r = L.parse_report(source, body)
    except ValueError:
        return
    assert r is None or isinstance(r, dict)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["loads", "load", "num_running_reqs", "dp_rank", "num_reqs",
                                         "token_usage", "core", "x"]), c, max_size=4),
                    max_leaves=20))
def test_parse_json_shapes_fuzz(obj):
    try:
        body = orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return
    for source in (L.SOURCE_V1_LOADS, L.SOURCE_GET_LOAD):
        try:
            r = L.parse_report(source, body)
        except ValueError:
            continue
        assert isinstance(r, dict) and isinstance(r["dp_rank_count"], int)


# -- the monitor

def test_monitor_against_mock_worker():
    async def main():
        mw = await MockWorker(MockConfig()).start()
        try:
            w = Worker(mw.url, worker_id="m")
            got = []
            mon = monitor(lambda wk, r: got.append((wk.id, r)), timeout=2.0)
            mon.add(w)
            assert await mon.poll_once() == 1
            (wid, r), = got
            assert wid == "m" and r["source"] == "v1/loads" and r["num_running_reqs"] == 0
            assert r["max_total_num_tokens"] == 524288
            # vLLM workers are read from /metrics
            mon.add(w, runtime="vllm")
            await mon.poll_once()
            assert got[-1][1]["source"] == "metrics" and got[-1][1]["token_usage"] == 0.0
        finally:
            await mw.stop()

    run(main())


def fake_fetch(routes: dict, log: list):
    async def fetch(url, path, api_key):
        log.append((path, api_key))
        r = routes.get(path, (404, b""))
        if isinstance(r, Exception):
            raise r
        return r
    return fetch


def test_monitor_fallback_chain_and_memo():
    async def main():
        calls = []
        routes = {L.GET_LOAD_PATH: (404, b""),
                  L.METRICS_PATH: (200, b"sglang:num_running_reqs 4\n")}
        got = []
        mon = monitor(lambda w, r: got.append(r), fetch=fake_fetch(routes, calls), api_key="k")
        w = Worker("http://127.0.0.1:9", worker_id="a")
        mon.add(w)
        await mon.poll_once()
        assert [p for p, _ in calls] == [L.V1_LOADS_PATH, L.GET_LOAD_PATH, L.METRICS_PATH]
        assert calls[0][1] == "k"
        assert got[-1]["num_running_reqs"] == 4
        calls.clear()
        await mon.poll_once()                      # remembers the source that worked
        assert [p for p, _ in calls] == [L.METRICS_PATH]
        routes[L.GET_LOAD_PATH] = (200, orjson.dumps([{"num_reqs": 2, "num_waiting_reqs": 1}]))
        routes[L.METRICS_PATH] = (500, b"")
        calls.clear()
        await mon.poll_once()
        assert [p for p, _ in calls] == [L.METRICS_PATH, L.V1_LOADS_PATH, L.GET_LOAD_PATH]
        assert got[-1]["source"] == "get_load" and got[-1]["num_running_reqs"] == 1

    run(main())


def test_monitor_stale_after_failures():
    async def main():
        calls = []
        routes = {L.V1_LOADS_PATH: (200, orjson.dumps({"loads": [{"num_running_reqs": 1}]}))}
        got = []
        mon = monitor(lambda w, r: got.append(r), fetch=fake_fetch(routes, calls))
        w = Worker("http://127.0.0.1:9", worker_id="a")
        mon.add(w, runtime="trtllm")
        await mon.poll_once()
        assert got[-1]["num_running_reqs"] == 1
        routes[L.V1_LOADS_PATH] = UpstreamError("refused")
        for _ in range(L.STALE_AFTER_FAILURES + 2):
            await mon.poll_once()
        assert got[1:] == [None]                    # cleared once, not on every failure
        assert [p for p, _ in calls] == [L.V1_LOADS_PATH] * (L.STALE_AFTER_FAILURES + 3)

    run(main())


def test_monitor_run_rounds_and_remove():
    async def main():
        slept = []

        async def sleep(d):
            slept.append(d)

        got = []
        routes = {L.METRICS_PATH: (200, b'vllm:num_requests_running 2\n')}
        mon = monitor(lambda w, r: got.append(r), fetch=fake_fetch(routes, []), sleep=sleep,
                          interval=10.0)
        w = Worker("http://127.0.0.1:9", worker_id="a")
        mon.add(w, runtime="vllm")
        await mon.run(rounds=3)
        assert len(got) == 3 and slept == [10.0, 10.0]
        mon.remove(w)
        assert await mon.poll_once() == 0
        with pytest.raises(ValueError):
            monitor(lambda *_: None, interval=0)

    run(main())


def test_monitor_polls_the_address_of_a_dp_rank():
    """A DP rank's logical key is base@rank; polls go to the base URL and get a report."""
    async def main():
        mw = await MockWorker(MockConfig()).start()
        try:
            w = Worker(mw.url, worker_id="r1", dp_rank=1)
            assert w.url == mw.url + "@1" and w.base_url == mw.url
            got = []
            mon = monitor(lambda wk, r: got.append(r))
            mon.add(w)
            await mon.poll_once()
            assert len(got) == 1 and got[0]["source"] == "v1/loads"
        finally:
            await mw.stop()
        seen = []

        async def fetch(url, path, key):
            seen.append(url)
            return 404, b""

        mon = monitor(lambda wk, r: None, fetch=fetch)
        mon.add(w)
        await mon.poll_once()
        assert seen and set(seen) == {w.base_url}

    run(main())


def test_monitor_settings_come_from_the_table():
    mon = monitor(lambda *_: None)
    assert (mon.interval, mon.timeout) == (CFG.load_monitor_interval, CFG.load_monitor_timeout_secs)
    mon = LoadMonitor.from_config(CFG.replace(load_monitor_timeout_secs=1.5), lambda *_: None)
    assert mon.timeout == 1.5
    with pytest.raises(TypeError):
        LoadMonitor(lambda *_: None)  # interval and timeout are required


def test_sources_for():
    assert L.sources_for("vllm") == (L.SOURCE_METRICS,)
    assert L.sources_for(None)[0] == L.SOURCE_V1_LOADS
    assert L.sources_for("sglang") == (L.SOURCE_V1_LOADS, L.SOURCE_GET_LOAD, L.SOURCE_METRICS)
    assert L.sources_for("external") == (L.SOURCE_V1_LOADS,)
