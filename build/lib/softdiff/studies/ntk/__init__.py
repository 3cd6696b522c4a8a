"""The neural tangent kernel of two-layer softmax networks: closed forms, empirical kernels, width study.

Conventions (stated once, used everywhere):
  * Closed forms (``two_layer_*_ntk``) are W-only kernels normalised to have a width limit:
    ``H = J J^T / kappa`` with ``kappa = ntk_scale(model)``: ``m`` for softmax (``F = m A softmax(W^T x)``,
    docs/theory.md 1.4) and ``1`` for relu / exp (``F = A act(W^T x) / sqrt(m)``, already in NTK parameterisation).
    So all three ``H`` are O(1) as ``m`` grows, and gradient descent with step ``eta`` on ``1/2 ||F - Y||^2``
    has linearised residual ``r(t+1) = (I - eta * kappa * H) r(t)``. The matrix is ``(n*d_out, n2*d_out)``,
    output-major: row ``l*n + i`` is output ``l`` at point ``x_i``.
  * ``empirical_ntk`` is the raw ``J J^T`` (no normalisation) in example-major layout: ``full`` has shape
    ``(n1, n2, o, o)``, ``trace`` ``(n1, n2)`` (sum over the output diagonal), ``diagonal`` ``(n1, n2, o)``;
    ``o`` is the flattened output size. ``ntk_as_matrix`` turns ``full`` into the output-major matrix, so
    ``two_layer_ntk(net, x) * ntk_scale(net) == ntk_as_matrix(empirical_ntk(net, ["W"], x))``.
"""
from softdiff.studies.ntk.closed_form import (ntk_scale, two_layer_exp_ntk, two_layer_ntk, two_layer_relu_ntk,
                                              two_layer_softmax_ntk)
from softdiff.studies.ntk.drift import KernelDriftTracker, NTKDriftCallback
from softdiff.studies.ntk.empirical import NTK_IMPLEMENTATIONS, NTK_MODES, empirical_ntk, ntk_as_matrix, ntk_to_full
from softdiff.studies.ntk.regime import (Spectrum, gd_dynamics, kernel_drift, kernel_regression, max_stable_lr,
                                         spectrum)
from softdiff.studies.ntk.width import WidthConvergence, monte_carlo_ntk

__all__ = ["KernelDriftTracker", "NTKDriftCallback", "NTK_IMPLEMENTATIONS", "NTK_MODES", "Spectrum",
           "WidthConvergence", "empirical_ntk", "gd_dynamics", "kernel_drift", "kernel_regression", "max_stable_lr",
           "monte_carlo_ntk", "ntk_as_matrix", "ntk_scale", "ntk_to_full", "spectrum", "two_layer_exp_ntk",
           "two_layer_ntk", "two_layer_relu_ntk", "two_layer_softmax_ntk"]
