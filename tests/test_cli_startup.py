"""``--help`` and a one-line config error answer before the heavy stack loads.

Each case is a fresh interpreter that calls a command's entry point as the console script or ``python
train.py`` would, then lists the heavy packages it imported. No timing here: benchmarks/bench_cli_startup.py
measures the seconds. The registries' names are checked against softdiff.choices, the torch-free copy that
config validation reads.
"""
import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

HEAVY = {"diffusers", "accelerate", "datasets", "torchvision", "scipy", "matplotlib", "sklearn", "torchdiffeq"}
# train, sample, eval and compare read and check their configs without torch as well.
TORCH_FREE = HEAVY | {"torch"}

PROBE = """
import json, runpy, sys
entry, argv, watched = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
try:
    if entry == "softdiff":
        from softdiff.cli import main
        code = main(argv)
    else:  # a repository script, run as `python train.py ARGS` runs it
        sys.argv = [entry, *argv]
        runpy.run_path(entry, run_name="__main__")
        code = 0
except SystemExit as exit:
    code = exit.code or 0
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in watched)}))
"""

# (entry, --help argv, config-error argv, the packages that must stay unloaded)
CASES = [
    ("softdiff", ["train"], ["train", "model.activation=swish2"], TORCH_FREE),
    ("softdiff", ["train"], ["train", "train.stepz=5"], TORCH_FREE),
    ("softdiff", ["train"], ["train", "model.width=64"], TORCH_FREE),  # a key ScoreTransformer does not take
    ("softdiff", ["train"], ["train", "train.steps=many"], TORCH_FREE),
    ("train.py", [], ["model.activation=swish2"], TORCH_FREE),
    ("sample.py", [], ["RUN", "scheduler=nope"], TORCH_FREE),
    ("softdiff", ["sample"], ["sample", "RUN", "steps=0"], TORCH_FREE),
    ("softdiff", ["eval"], ["eval", "RUN", "metrics=[nope]"], TORCH_FREE),
    ("softdiff", ["compare"], ["compare", "activations=[swish2]"], TORCH_FREE),
    ("softdiff", ["ntk"], ["ntk", "tasks=[nope]"], HEAVY),
    ("softdiff", ["regress"], ["regress", "methods=[nope]"], HEAVY),
    ("softdiff", ["flow"], ["flow", "protocol=E9"], HEAVY),
    ("softdiff", ["probe"], ["probe", "RUN", "threshold=2"], HEAVY),
    ("softdiff", ["sinks"], ["sinks", "task=nope"], HEAVY),
]


def _probe(entry, argv, watched, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = entry if entry == "softdiff" else str(ROOT / entry)
    proc = subprocess.run([sys.executable, "-c", PROBE, script, json.dumps(argv), json.dumps(sorted(watched))],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize("entry, help_argv, bad_argv, watched", CASES,
                         ids=[f"{e}-{' '.join(bad)}" for e, _, bad, _ in CASES])
def test_help_and_config_error_do_not_import_the_heavy_stack(entry, help_argv, bad_argv, watched, tmp_path):
    shown, _ = _probe(entry, [*help_argv, "--help"], watched, tmp_path)
    assert shown == {"code": 0, "heavy": []}
    failed, stderr = _probe(entry, bad_argv, watched, tmp_path)
    assert failed == {"code": 2, "heavy": []}
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_torch_free_names_match_the_registries():
    from softdiff import choices
    from softdiff.data import DATASETS, IMAGE_DATASETS, LAZY_DATASETS
    from softdiff.data.idx import IDX_DATASETS, SPLITS
    from softdiff.data.images import TORCHVISION
    from softdiff.data.toy2d import TOY2D
    from softdiff.diffusion.objectives import LOSS_WEIGHTINGS
    from softdiff.diffusion.schedulers import DIFFUSION_PREDICTION_TYPES, FLOW_SCHEDULERS, SCHEDULERS
    from softdiff.diffusion.timesteps import TIMESTEP_DENSITIES
    from softdiff.evaluation.classifiers import FEATURE_DATASETS
    from softdiff.nets import ACTIVATIONS, ATTENTION_NORMALIZATIONS
    from softdiff.nets.score_transformer import CONDITIONINGS
    from softdiff.nets.two_layer import TWO_LAYER_ACTIVATIONS

    registries = {"DATASETS": DATASETS, "IMAGE_DATASETS": IMAGE_DATASETS, "LAZY_DATASETS": LAZY_DATASETS,
                  "IDX_DATASETS": IDX_DATASETS, "IDX_SPLITS": SPLITS, "TORCHVISION": TORCHVISION, "TOY2D": TOY2D,
                  "LOSS_WEIGHTINGS": LOSS_WEIGHTINGS, "DIFFUSION_PREDICTION_TYPES": DIFFUSION_PREDICTION_TYPES,
                  "FLOW_SCHEDULERS": FLOW_SCHEDULERS, "SCHEDULERS": SCHEDULERS,
                  "TIMESTEP_DENSITIES": TIMESTEP_DENSITIES, "FEATURE_DATASETS": FEATURE_DATASETS,
                  "ACTIVATIONS": ACTIVATIONS, "ATTENTION_NORMALIZATIONS": ATTENTION_NORMALIZATIONS,
                  "CONDITIONINGS": CONDITIONINGS,
                  "TWO_LAYER_ACTIVATIONS": TWO_LAYER_ACTIVATIONS}
    for name, registry in registries.items():
        assert tuple(getattr(choices, name)) == tuple(registry), name  # the order shows in error messages


def imports_in_functions(path):
    """``(line, module names)`` of every import statement inside a function of the file at ``path``."""
    for function in ast.walk(ast.parse(path.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom):
                    yield node.lineno, [node.module or ""]
                elif isinstance(node, ast.Import):
                    yield node.lineno, [alias.name for alias in node.names]


def test_commands_import_at_the_top_and_hand_their_work_to_a_work_module():
    """Start-up stays fast by structure, not by imports inside functions: each command module imports at its top
    only what checks the arguments, and its ``main`` hands over to the ``run`` of the work module of its name."""
    from importlib.util import find_spec

    from softdiff.cli import COMMANDS

    package = ROOT / "softdiff"
    files = [package / "cli.py", package / "command_line.py", *sorted((package / "commands").rglob("*.py"))]
    local = [f"{path.relative_to(ROOT)}:{line}" for path in files for line, _ in imports_in_functions(path)]
    assert local == []
    for module, _ in COMMANDS.values():
        calls = [node for node in ast.walk(ast.parse(find_spec(module).loader.get_source(module)))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_work"]
        assert len(calls) == 1, module
        work = find_spec(f"softdiff.commands.work.{calls[0].args[0].value}")
        assert work is not None and "\ndef run(" in work.loader.get_source(work.name), module


# The package's function-local imports of its own modules, each there for an optional dependency that the
# module importing it must not need (file -> the modules it may import inside a function).
LOCAL_IMPORTS_ALLOWED = {"softdiff/data/__init__.py": {"softdiff.data.hf"}}  # hf needs the `datasets` extra


def test_the_package_imports_its_own_modules_at_the_top_except_behind_an_optional_dependency():
    """A softdiff module imported inside a function dodges nothing but a cycle or a cost; the cycles are fixed by
    structure and the heavy names load through ``lazy_exports``, so only the optional extras stay local."""
    found = {}
    for path in sorted((ROOT / "softdiff").rglob("*.py")):
        for _, names in imports_in_functions(path):
            for name in names:
                if name.split(".")[0] == "softdiff":
                    found.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    assert found == LOCAL_IMPORTS_ALLOWED
