"""Score networks built from two-layer softmax blocks and value-softmax attention."""
from softdiff.nets.activations import ACTIVATIONS, Activation, get_activation, softmax_vjp
from softdiff.nets.attention import ATTENTION_NORMALIZATIONS, ValueSoftmaxAttention
from softdiff.nets.blocks import TwoLayerBlock, TwoLayerMLP
from softdiff.nets.score_mlp import ScoreMLP, TwoLayerScoreNet
from softdiff.nets.score_transformer import ScoreTransformer
from softdiff.nets.two_layer import TwoLayerSoftmax

SCORE_NETS = {"ScoreMLP": ScoreMLP, "ScoreTransformer": ScoreTransformer, "TwoLayerScoreNet": TwoLayerScoreNet}

__all__ = [
    "ACTIVATIONS", "ATTENTION_NORMALIZATIONS", "Activation", "SCORE_NETS", "ScoreMLP", "ScoreTransformer",
    "TwoLayerBlock", "TwoLayerMLP", "TwoLayerScoreNet", "TwoLayerSoftmax", "ValueSoftmaxAttention",
    "get_activation", "softmax_vjp",
]
