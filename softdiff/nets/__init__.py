"""Score networks built from two-layer softmax blocks and value-softmax attention."""
from softdiff.nets.activations import ACTIVATIONS, Activation, get_activation, softmax_vjp
from softdiff.nets.two_layer import TwoLayerSoftmax

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "softmax_vjp", "TwoLayerSoftmax"]
