"""Score networks built from two-layer softmax blocks and value-softmax attention.

The names below load on first use (PEP 562): the score networks bring diffusers, which a study that needs
only the attention or the two-layer network, or a command answering ``--help``, should not wait for. The
registry of score nets (``model.type``) is torch-free and loads at once."""
from softdiff.lazy_exports import lazy_exports
from softdiff.nets.registry import NETS, NetEntry, register_net

_EXPORTS = {
    "softdiff.nets.activations": ("ACTIVATIONS", "Activation", "get_activation", "softmax_vjp"),
    "softdiff.nets.attention": ("ATTENTION_NORMALIZATIONS", "SelfAttention", "ValueSoftmaxAttention"),
    "softdiff.nets.blocks": ("TwoLayerBlock", "TwoLayerMLP"),
    "softdiff.nets.score_mlp": ("ScoreMLP", "TwoLayerScoreNet"),
    "softdiff.nets.score_transformer": ("ScoreTransformer",),
    "softdiff.nets.two_layer": ("TwoLayerNet", "TwoLayerSoftmax"),
}
_lazy_getattr, _names = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name == "SCORE_NETS":  # model.type -> class, for every registered net (the shipped ones and any added)
        return {type_name: entry.net_class() for type_name, entry in NETS.items()}
    return _lazy_getattr(name)


__all__ = ["NETS", "NetEntry", "SCORE_NETS", "register_net", *_names]
