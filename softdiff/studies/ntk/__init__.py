"""The neural tangent kernel of two-layer softmax networks: closed forms, empirical kernels, width study."""
