"""Softmax regression: the problem, its convexity certificate and its solvers (Newton, approximate Newton, ...)."""
from softdiff.studies.softmax_regression.problem import (DegenerateProblemError, SoftmaxRegression,
                                                        convexity_certificate, leverage_scores, smoothness_bound)
from softdiff.studies.softmax_regression.solvers import METHODS, Result, solve

__all__ = ["DegenerateProblemError", "METHODS", "Result", "SoftmaxRegression", "convexity_certificate",
           "leverage_scores", "smoothness_bound", "solve"]
