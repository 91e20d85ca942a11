"""A simulated inference-engine fleet for routing-quality tests and benchmarks.

``EngineModel`` (model.py) is the sans-I/O part: prompt rendering and block keys, a
bounded LRU prefix cache, the scheduler's timing rules. ``SimEngine`` (server.py) puts
one model on a TCP port behind SGLang-shaped HTTP endpoints; ``start_fleet`` starts
many in one process. ``python -m smg.testing.engine_sim`` runs a fleet from the shell.
"""
from smg.testing.engine_sim.model import EngineModel, PrefixCache, SimParams, block_keys, render_chat
from smg.testing.engine_sim.server import SimEngine, start_fleet

__all__ = ["EngineModel", "PrefixCache", "SimParams", "SimEngine", "block_keys", "render_chat", "start_fleet"]
