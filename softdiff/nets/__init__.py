"""Score networks built from two-layer softmax blocks and value-softmax attention.

The names below load on first use (PEP 562): the score networks bring diffusers, which a study that needs
only the attention or the two-layer network, or a command answering ``--help``, should not wait for."""
from softdiff.lazy_exports import lazy_exports

_EXPORTS = {
    "softdiff.nets.activations": ("ACTIVATIONS", "Activation", "get_activation", "softmax_vjp"),
    "softdiff.nets.attention": ("ATTENTION_NORMALIZATIONS", "ValueSoftmaxAttention"),
    "softdiff.nets.blocks": ("TwoLayerBlock", "TwoLayerMLP"),
    "softdiff.nets.score_mlp": ("ScoreMLP", "TwoLayerScoreNet"),
    "softdiff.nets.score_transformer": ("ScoreTransformer",),
    "softdiff.nets.two_layer": ("TwoLayerSoftmax",),
}
_lazy_getattr, _names = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name == "SCORE_NETS":
        return {"ScoreMLP": _lazy_getattr("ScoreMLP"), "ScoreTransformer": _lazy_getattr("ScoreTransformer"),
                "TwoLayerScoreNet": _lazy_getattr("TwoLayerScoreNet")}
    return _lazy_getattr(name)


__all__ = sorted([*_names, "SCORE_NETS"])
