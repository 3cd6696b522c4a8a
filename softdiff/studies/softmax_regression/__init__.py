"""Softmax regression: the problem, its convexity certificate and its solvers (Newton, approximate Newton, ...)."""
