import os
import sys

# benchmarks share fixtures with the tests (e.g. tests/native/http1_corpus.py)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
