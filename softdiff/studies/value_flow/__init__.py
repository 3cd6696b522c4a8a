"""Gradient flow on the value-softmax model (docs/theory.md 3): normalisations, losses, the two models, GD and
ODE integration, the history, the E1..E5 presets with their references, summaries, plots and the command.

``from softdiff.studies.value_flow import value_softmax_flow`` works; the names load on first use (PEP 562), so
the command's ``--help`` does not import the integrators and plots."""
from softdiff.lazy_exports import lazy_exports

_EXPORTS = {
    "softdiff.studies.value_flow.integrate": ("FlowIntegrationError", "value_softmax_flow"),
    "softdiff.studies.value_flow.history": ("FlowHistory",),
    "softdiff.studies.value_flow.losses": ("LOSSES", "get_loss"),
    "softdiff.studies.value_flow.normalisations": ("NORMALISATIONS", "get_normalisation"),
    "softdiff.studies.value_flow.presets": ("FlowCase", "preset_cases", "run_case"),
    "softdiff.studies.value_flow.problem": ("TiedProblem", "ValueSoftmaxProblem", "make_problem", "objective"),
    "softdiff.studies.value_flow.summaries": ("endings",),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
