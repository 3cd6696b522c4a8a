"""Gradient flow on the value-softmax model (docs/theory.md 3): normalisations, losses, the two models, GD and
ODE integration, the history, the E1..E5 presets with their references, summaries, plots and the command.

``from softdiff.studies.value_flow import value_softmax_flow`` works; the names load on first use (PEP 562), so
the command's ``--help`` does not import the integrators and plots."""
from importlib import import_module

_EXPORTS = {
    "softdiff.studies.value_flow.integrate": ("FlowIntegrationError", "value_softmax_flow"),
    "softdiff.studies.value_flow.history": ("FlowHistory",),
    "softdiff.studies.value_flow.losses": ("LOSSES", "get_loss"),
    "softdiff.studies.value_flow.normalisations": ("NORMALISATIONS", "get_normalisation"),
    "softdiff.studies.value_flow.presets": ("FlowCase", "preset_cases", "run_case"),
    "softdiff.studies.value_flow.problem": ("TiedProblem", "ValueSoftmaxProblem", "make_problem", "objective"),
    "softdiff.studies.value_flow.summaries": ("endings",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_MODULE_OF)
