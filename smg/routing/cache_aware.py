"""cache_aware: send a request to the worker most likely to hold its prompt prefix in KV cache,
unless that would overload it.

Per model, one approximate radix tree (``StringTree`` from smg/routing/radix.py) records
which worker (tenant = ``worker.id``) was last sent each prefix of the routing text
(smg/routing/text.py). Per request:

1. One pass over the candidates finds the least-loaded worker (load = the gateway's
   in-flight count; ties → fewer processed, then the earlier candidate) and the largest
   load.
2. ``match_rate = matched_chars / len(text)`` against the tree. If it exceeds
   ``cache_threshold`` and the owning worker is a candidate, the owner is chosen;
   otherwise the least-loaded worker (not the one with the smallest tree: SMG changed that
   after it caused hot-spots, sglang#14305/#14532).
3. Imbalance (``max - min > balance_abs_threshold`` AND ``max > min *
   balance_rel_threshold``) sends the request to the least-loaded worker instead (tested
   on the cache owner's load rather than the fleet's maximum, see below).
4. The text is inserted under the chosen worker, whichever rule chose it.

Deliberately better than SMG 1.9 (issue corpus, smg.md §16):

- Cache affinity survives imbalance elsewhere in the fleet (sglang#32195). SMG tests the
  imbalance rule on the fleet's max and min, so one hot worker sends *every* request to the
  least-loaded one and throws away all cache hits. Here the rule is applied to the worker
  the cache would pick: it is skipped only when it is itself hot (``owner - min > abs``
  AND ``owner > min * rel``). A fleet balanced by SMG's test has no hot owner either
  (``owner <= max``), so balanced fleets route exactly as SMG does, and an overloaded
  cache owner still spills. ``affinity_under_imbalance=False`` restores SMG's rule.
  SMG 1.13 moved the same way (it skips only a matched worker above the mean).
- Memory is bounded for the whole model tree (smg#2137 was a per-worker bound), in bytes
  rather than characters, and not only every ``eviction_interval_secs``.
  ``max_tree_size`` bounds the tree's estimated memory (``mem_size()``: per-node overhead
  plus label bytes plus per-holding slots, radix_py docstring rule 5). A character bound
  let trees of short unique prompts, where the ~110 bytes of every node dominate, grow
  several times past the setting (an adversarial soak: +155 bytes of RSS per request).
  The tree is trimmed to the budget every ``eviction_interval_secs`` (the sweep, as SMG
  does), and ``record`` trims it at once when an insert takes it past
  ``EVICT_OVERSHOOT`` times the budget. So the accounted size is at most the budget after
  every eviction and at most ``EVICT_OVERSHOOT`` times it (plus the prompt just inserted)
  at any moment, however fast requests arrive: a burst between two sweeps cannot grow it.
- Cost: one Python pass over the candidates plus two native tree walks; ~8-10 µs for an 8 KB
  prompt and 64 workers (bench/micro/test_policy_bench.py), O(candidates) with a small
  constant at 1,000 workers (smg#1692/#1758 were hot-path CPU at scale).

Token ids: a request the gateway tokenized before selection (gRPC workers:
``request.routing_tokens()``) is matched and inserted as its token ids in a second tree,
a ``TokenTree`` made on first use, with the same rules (``match_rate`` = matched tokens /
prompt tokens) and its own ``max_tree_size`` budget: the engines' KV caches are keyed by
token ids, and a chat template's rendering is what they see. The two key kinds never
share a tree.

Tree state changes only through ``record``, ``forget_worker`` and ``evict`` (to be
replicated to sibling gateway processes as events).
"""
from __future__ import annotations

from smg.routing.cache_feedback import AnswerHook, Feedback
from smg.routing.least_load import CandidateIndex, config_value
from smg.routing.policy import Policy
from smg.routing.radix import MAX_KEY_UNITS, StringTree, TokenTree
from smg.routing.ttft_cost import CHARS_PER_TOKEN, cost, report_terms

#: ``record`` evicts early once a tree's ``mem_size()`` passes this many times
#: ``max_tree_size``. Eviction walks the whole tree (O(nodes)), so running it on every
#: insert the moment the budget is passed would cost that walk per small overshoot; at 1.5x
#: the walk is amortized over half a budget of inserts while memory stays within 1.5x of
#: the bound. The check itself is one C call per insert.
EVICT_OVERSHOOT = 1.5


class CacheAwarePolicy(Policy):
    name = "cache_aware"
    takes_config = True
    needs_text = True

    def __init__(self, config=None, tree_cls=None, affinity_under_imbalance: bool = True,
                 token_tree_cls=None) -> None:
        self.tree = (tree_cls or StringTree)()
        self._token_tree_cls = token_tree_cls or TokenTree
        self.token_tree = None   # made on the first request routed on token ids
        self.configure(config)
        self.affinity_under_imbalance = affinity_under_imbalance
        self._next_evict = None
        self._index = CandidateIndex()
        # the decision's mode, explanation and closed loop are fixed at start-up (not
        # in SETTINGS: a reload that changes them is refused)
        self.mode = config_value(config, "cache_aware_mode")
        if self.mode == "ttft":
            self.request_cost = float(config_value(config, "cache_aware_request_cost_tokens"))
            self._reports: dict = {}   # worker id -> (report object, report_terms(report))
            self.select = self._select_ttft
        if config_value(config, "route_explain"):
            self._explained = self.select
            self.select = self._select_explain
        self.feedback = None
        if config_value(config, "cache_feedback"):
            self.feedback = Feedback()
            self._chooser = self.select
            self.select = self._select_feedback

    #: the settings ``configure`` reads (a configuration reload may change them at run time)
    SETTINGS = ("cache_threshold", "balance_abs_threshold", "balance_rel_threshold", "eviction_interval_secs",
                "max_tree_size")

    def configure(self, config) -> None:
        """(Re)reads the policy's parameters; the trees are kept (a reload changes only
        how they are used; a smaller ``max_tree_size`` trims them at the next sweep)."""
        self.cache_threshold = float(config_value(config, "cache_threshold"))
        self.abs_threshold = config_value(config, "balance_abs_threshold")
        self.rel_threshold = float(config_value(config, "balance_rel_threshold"))
        interval = float(config_value(config, "eviction_interval_secs"))
        if getattr(self, "_next_evict", None) is not None and interval < self.eviction_interval:
            self._next_evict -= self.eviction_interval - interval  # a shorter interval applies now
        self.eviction_interval = interval
        self.max_tree_size = int(config_value(config, "max_tree_size"))  # bytes (mem_size)
        self._evict_at = int(self.max_tree_size * EVICT_OVERSHOOT)
        # one prompt's text is matched and inserted up to what a quarter of the budget
        # holds even at 4 UTF-8 bytes a character: a huge prompt cannot evict the cache
        self._max_text = max(1, min(MAX_KEY_UNITS, self.max_tree_size // 16))

    # -- selection -------------------------------------------------------------------------

    def select(self, workers: list, request):
        # One pass: least-loaded worker (load, processed, index) and the largest load.
        best = workers[0]
        lo = hi = best.inflight
        bp = best.processed
        for w in workers:
            load = w.inflight
            if load < lo:
                best = w
                lo = load
                bp = w.processed
            elif load == lo:
                p = w.processed
                if p < bp:
                    best = w
                    bp = p
            elif load > hi:
                hi = load
        abs_t = self.abs_threshold
        rel_t = self.rel_threshold
        text = request.routing_tokens()
        if text is None:
            text = request.routing_text()
            tree = self.tree
        else:
            tree = self.token_tree
            if tree is None:
                tree = self.token_tree = self._token_tree_cls()
        if len(text) > self._max_text:  # the budget's share (and the tree's key limit)
            text = text[:self._max_text]
        chosen = best
        if text and (self.affinity_under_imbalance or not (hi - lo > abs_t and hi > lo * rel_t)):
            matched, tenant = tree.match(text)
            if tenant is not None and matched / len(text) > self.cache_threshold:
                owner = self._index.get(workers, tenant)
                if owner is not None:
                    load = owner.inflight
                    if not (load - lo > abs_t and load > lo * rel_t):
                        chosen = owner
        self.record(text, chosen.id, tree)
        return chosen

    def _text_and_tree(self, request) -> tuple:
        """The routing key (token ids, else text, cut to the budget's share), its tree and
        the tokens one unit of it stands for."""
        text = request.routing_tokens()
        if text is None:
            text = request.routing_text()
            tree = self.tree
            per_unit = 1.0 / CHARS_PER_TOKEN
        else:
            tree = self.token_tree
            if tree is None:
                tree = self.token_tree = self._token_tree_cls()
            per_unit = 1.0
        if len(text) > self._max_text:
            text = text[:self._max_text]
        return text, tree, per_unit

    def _select_ttft(self, workers: list, request):
        """``ttft`` mode: the least estimated time to first token (smg/routing/ttft_cost.py);
        ties → fewer in flight, fewer processed, the earlier candidate."""
        text, tree, per_unit = self._text_and_tree(request)
        matches = tree.match_all(text) if text else {}
        n = len(text)
        rc = self.request_cost
        reports = self._reports
        best = None
        bc = 0.0
        bl = bp = 0
        for w in workers:
            e = w.engine
            st = reports.get(w.id)
            if st is None or st[0] is not e:
                st = reports[w.id] = (e, report_terms(e))
            cap, reported, waiting = st[1]
            load = w.inflight
            ahead = reported if reported > load else load
            # ttft_cost.cost(), inlined (one call per candidate is a third of the decision)
            c = (n - matches.get(w.id, 0)) * per_unit + waiting + rc * ahead / cap
            if ahead >= cap:
                c += rc * (ahead + 1 - cap) / cap
            if best is None or c < bc or (c == bc and (load < bl or (load == bl and w.processed < bp))):
                best = w
                bc = c
                bl = load
                bp = w.processed
        self.record(text, best.id, tree)
        return best

    def _select_explain(self, workers: list, request):
        """``--route-explain``: the mode's choice, and ``request.explain`` saying why (the
        ``x-smg-route-explain`` response header): per candidate its match in tokens,
        requests ahead, capacity and, in ttft mode, the estimated cost."""
        text, tree, per_unit = self._text_and_tree(request)
        matches = tree.match_all(text) if text else {}
        chosen = self._explained(workers, request)
        n = len(text)
        parts = [f"mode={self.mode}", f"prompt_tokens={n * per_unit:.0f}", f"chosen={chosen.url}"]
        for w in workers:
            m = matches.get(w.id, 0)
            cap, reported, waiting = report_terms(w.engine)
            ahead = max(w.inflight, reported)
            item = f"{w.url} match={m * per_unit:.0f} ahead={ahead} cap={cap}"
            if self.mode == "ttft":
                item += f" cost={cost((n - m) * per_unit, ahead, cap, waiting, self.request_cost):.0f}"
            else:
                item += f" rate={(m / n if n else 0.0):.2f}"
            parts.append(item)
        try:
            request.explain = "; ".join(parts)
        except AttributeError:
            pass
        return chosen

    def _select_feedback(self, workers: list, request):
        """``--cache-feedback``: the mode's choice, with the chosen worker's predicted match
        handed to an end hook that corrects the tree from the answer's cached_tokens
        (smg/routing/cache_feedback.py)."""
        text, tree, _ = self._text_and_tree(request)
        matches = tree.match_all(text) if text else {}
        chosen = self._chooser(workers, request)
        fb = self.feedback
        fb.enforce(tree, chosen.id)
        add = getattr(request, "add_end_hook", None)
        if add is not None:
            add(AnswerHook(fb, tree, chosen, matches.get(chosen.id, 0),
                           CHARS_PER_TOKEN if tree is self.tree else 1))
        return chosen

    # -- state changes ---------------------------------------------------------------------

    def record(self, text, worker_id: str, tree=None) -> None:
        """``worker_id`` was sent ``text`` (a string, or token ids with ``tree`` the
        token tree): it now holds every prefix of it. Trims that tree at once if this
        took it past ``EVICT_OVERSHOOT`` times the budget."""
        if text:
            if tree is None:
                tree = self.tree
            tree.insert(text, worker_id)
            if tree.mem_size() > self._evict_at:
                tree.evict_mem(self.max_tree_size)

    def forget_worker(self, worker_id: str) -> None:
        self.tree.remove_tenant(worker_id)
        if self.token_tree is not None:
            self.token_tree.remove_tenant(worker_id)

    def evict(self) -> int:
        """Trims each tree's estimated memory to ``max_tree_size`` bytes (all workers
        together); returns the bytes freed."""
        freed = self.tree.evict_mem(self.max_tree_size)
        if self.token_tree is not None:
            freed += self.token_tree.evict_mem(self.max_tree_size)
        return freed

    # -- events ------------------------------------------------------------------------------

    def on_worker_removed(self, worker) -> None:
        self.forget_worker(worker.id)
        if self.mode == "ttft":
            self._reports.pop(worker.id, None)
        if self.feedback is not None:
            self.feedback.forget(worker.id)

    def maintain(self, now: float) -> None:
        """The periodic trim, every ``eviction_interval_secs`` (bursts: see ``record``)."""
        due = self._next_evict
        if due is None:
            self._next_evict = now + self.eviction_interval
        elif now >= due:
            self._next_evict = now + self.eviction_interval
            self.evict()
            if self.feedback is not None:
                self.feedback.stats.log_rate(self.name)
