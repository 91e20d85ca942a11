"""``python -m smg.testing.mock_worker --port N``: the ``mock-worker`` command (``cli.py``)."""
import sys

from smg.testing.mock_worker.cli import mock_worker_command

sys.exit(mock_worker_command())
