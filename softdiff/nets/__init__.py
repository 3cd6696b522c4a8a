"""Score networks built from two-layer softmax blocks and value-softmax attention.

The names below load on first use (PEP 562): the score networks bring diffusers, which a study that needs
only the attention or the two-layer network, or a command answering ``--help``, should not wait for."""
from importlib import import_module

_EXPORTS = {
    "softdiff.nets.activations": ("ACTIVATIONS", "Activation", "get_activation", "softmax_vjp"),
    "softdiff.nets.attention": ("ATTENTION_NORMALIZATIONS", "ValueSoftmaxAttention"),
    "softdiff.nets.blocks": ("TwoLayerBlock", "TwoLayerMLP"),
    "softdiff.nets.score_mlp": ("ScoreMLP", "TwoLayerScoreNet"),
    "softdiff.nets.score_transformer": ("ScoreTransformer",),
    "softdiff.nets.two_layer": ("TwoLayerSoftmax",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name == "SCORE_NETS":
        return {"ScoreMLP": __getattr__("ScoreMLP"), "ScoreTransformer": __getattr__("ScoreTransformer"),
                "TwoLayerScoreNet": __getattr__("TwoLayerScoreNet")}
    if name in _MODULE_OF:
        return getattr(import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted([*_MODULE_OF, "SCORE_NETS"])
