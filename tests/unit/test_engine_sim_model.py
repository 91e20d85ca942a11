"""The engine simulator's sans-I/O model: block keys, the LRU prefix cache, scheduling times."""
from smg.testing.engine_sim.model import EngineModel, PrefixCache, SimParams, block_keys, render_chat


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_block_keys_chain_a_shared_prefix():
    a = block_keys("s" * 128 + "a" * 64, 4, 4)   # 16 chars a block
    b = block_keys("s" * 128 + "b" * 64, 4, 4)
    assert len(a) == len(b) == 12
    assert a[:8] == b[:8] and a[8] != b[8]
    assert block_keys("x" * 15, 4, 4) == []      # a partial block is not cached


def test_render_chat_is_prefix_preserving_across_turns():
    t1 = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}]
    t2 = t1 + [{"role": "assistant", "content": "a1"}, {"role": "user", "content": [{"type": "text", "text": "q2"}]}]
    r1, r2 = render_chat(t1), render_chat(t2)
    assert r2.startswith(r1[:-len("<|assistant|>\n")])
    assert "q2" in r2


def test_cache_lru_evicts_tails_before_roots():
    c = PrefixCache(4)
    assert c.use(["a", "b", "c"]) == 0
    assert c.use(["a", "b", "c"]) == 3 and c.hits == 3 and c.misses == 3
    c.use(["x", "y"])                            # 5 blocks into 4: the oldest goes
    assert c.evictions == 1
    # a-b-c was touched deepest first, so its tail "c" was the oldest and left first
    assert c.match(["a", "b", "c"]) == 2
    assert len(c) == 4


def test_schedule_queues_past_max_running_and_times_prefill():
    clk = Clock()
    p = SimParams(block_size=4, chars_per_token=1, max_running=1, prefill_us_per_token=1000.0,
                  prefill_overhead_ms=0.0, decode_base_ms=2.0, decode_per_req_ms=1.0)
    e = EngineModel(p, clock=clk)
    admitted = []
    j1, j2 = e.job("p" * 40, 4), e.job("p" * 40, 4)
    for j in (j1, j2):
        j.on_admit = admitted.append
        e.submit(j)
    assert admitted == [j1] and e.running == 1 and list(e.waiting) == [j2]
    assert abs(j1.first_token_at - (100.0 + 0.040)) < 1e-9     # 40 uncached tokens x 1 ms
    assert e.step_seconds() == 0.003                           # 2 ms + 1 ms x one running
    assert e.waiting_uncached_tokens() == 0                     # j1's blocks are cached now
    clk.t = 100.1
    e.finish(j1)
    assert admitted == [j1, j2] and j2.cached_tokens == 39      # all 10 blocks, one token left to compute
    assert abs(j2.first_token_at - (100.1 + 0.001)) < 1e-9
    e.finish(j2)
    assert e.running == 0
    s = e.stats()
    assert s["requests"] == 2 and s["block_hits"] == 10 and s["block_misses"] == 10


def test_prefills_queue_behind_each_other():
    clk = Clock()
    p = SimParams(block_size=4, chars_per_token=1, max_running=4, prefill_us_per_token=1000.0,
                  prefill_overhead_ms=0.0)
    e = EngineModel(p, clock=clk)
    a, b = e.job("a" * 10, 1), e.job("b" * 20, 1)
    e.submit(a)
    e.submit(b)
    assert abs(a.first_token_at - 100.010) < 1e-9
    assert abs(b.first_token_at - 100.030) < 1e-9               # behind a's prefill


def test_a_waiting_job_that_leaves_frees_its_place():
    e = EngineModel(SimParams(max_running=1), clock=Clock())
    j1, j2 = e.job("a", 1), e.job("b", 1)
    e.submit(j1)
    e.submit(j2)
    e.finish(j2)
    assert not e.waiting and e.running == 1
    e.finish(j1)
    e.finish(j1)                                                # twice is harmless
    assert e.running == 0


def test_deterministic_for_a_seed():
    def lengths(seed):
        e = EngineModel(SimParams(out_jitter=0.5, seed=seed), clock=Clock())
        return [e.job("x" * 100, 100).out_tokens for _ in range(20)]
    assert lengths(3) == lengths(3)
    assert lengths(3) != lengths(4)
    assert all(50 <= n <= 100 for n in lengths(3))
