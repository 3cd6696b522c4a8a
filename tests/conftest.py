import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_script():
    """Run a repository script in a subprocess; returns CompletedProcess with text output."""

    def _run(*args, timeout=300, env_extra=None):
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
        return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)

    return _run
