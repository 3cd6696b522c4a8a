import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_script():
    """Run a repository script in a subprocess; returns CompletedProcess with text output."""

    def _run(*args, timeout=300, env_extra=None):
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
        return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)

    return _run


class _Forked:
    """Client of tests/fork_runner.py: run a command in a forked child of a preloaded interpreter."""

    def __init__(self, tmp_dir):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fork_runner.py")], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.tmp_dir, self.count = Path(tmp_dir), 0
        ready = self.proc.stdout.readline()
        assert '"ready"' in ready, "fork_runner.py did not start"

    def __call__(self, entry, *args, code=None, env=None, cwd=ROOT, timeout=300):
        self.count += 1
        out, err = self.tmp_dir / f"{self.count}.out", self.tmp_dir / f"{self.count}.err"
        request = {"entry": entry, "args": [str(a) for a in args], "code": code, "env": env or {},
                   "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess([entry, *request["args"]], reply["returncode"], out.read_text(),
                                           err.read_text())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def forked(tmp_path_factory):
    """``forked("train.py" | "sample.py" | "softdiff" | "code", *args, code=..., env=..., cwd=...)``: the
    command's CompletedProcess, run in its own process (see tests/fork_runner.py)."""
    client = _Forked(tmp_path_factory.mktemp("forked"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def one_thread():
    """Runs compared bitwise use the same number of threads (it changes float summation order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def softdiff_cache(tmp_path_factory):
    """Feature classifiers trained during the tests go to a fresh cache, never the user's (and are trained once
    per session); subprocesses inherit it."""
    before = os.environ.get("SOFTDIFF_CACHE")
    os.environ["SOFTDIFF_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["SOFTDIFF_CACHE"])
    if before is None:
        os.environ.pop("SOFTDIFF_CACHE")
    else:
        os.environ["SOFTDIFF_CACHE"] = before


FASHION = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist puts its IDX files
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture(scope="session")
def fashion_classifier(softdiff_cache):
    """The Fashion-MNIST feature classifier softdiff ships: (model, metadata)."""
    from softdiff.evaluation.classifiers import ensure_classifier

    return ensure_classifier(dataset="fashion_mnist")
