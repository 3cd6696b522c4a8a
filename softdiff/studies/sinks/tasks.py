"""The two synthetic tasks of the authors' ``exp_induction.py`` / ``exp_classification.py`` (re-implemented,
vectorised, drawn from a torch generator).

Induction: ``[BOS, t_1 .. t_m, q, c]`` with ``m = seq_length - 3`` distinct tokens from ``1..V-1``, ``q`` a copy of
``t_r`` (shifted by ``V`` when ``shift_query_token``) and ``c = (t_1 .. t_m, q)[r + 1]``; inputs are the sequence
without its last token, targets without its first. Classification: label ``y`` in ``0..K-1`` and the tokens of
group ``y`` (``1 + y G .. (y + 1) G``) in random order, with the CLS token 0 first (the model has no positions and
is not causal, so CLS's place does not matter; the authors append it).
"""
from __future__ import annotations

import torch
from torch import Tensor

BOS = CLS = 0


def induction_batch(n: int, vocab_size: int, seq_length: int, shift_query_token: bool,
                    gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)``, both (n, seq_length - 1) long tensors."""
    m = seq_length - 3
    main = torch.rand(n, vocab_size - 1, generator=gen).argsort(-1)[:, :m] + 1
    r = torch.randint(0, m, (n,), generator=gen)
    rows = torch.arange(n)
    query = main[rows, r] + (vocab_size if shift_query_token else 0)
    extended = torch.cat([main, query[:, None]], 1)
    cont = extended[rows, r + 1]
    seq = torch.cat([torch.full((n, 1), BOS), main, query[:, None], cont[:, None]], 1)
    return seq[:, :-1], seq[:, 1:]


def classification_batch(n: int, vocab_size: int, seq_length: int, num_labels: int,
                         gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(inputs (n, seq_length), labels (n,))``; needs ``(vocab_size - 1) % num_labels == 0`` and
    ``seq_length - 1 <= (vocab_size - 1) / num_labels``."""
    group = (vocab_size - 1) // num_labels
    labels = torch.randint(0, num_labels, (n,), generator=gen)
    tokens = torch.rand(n, group, generator=gen).argsort(-1)[:, :seq_length - 1] + 1 + group * labels[:, None]
    return torch.cat([torch.full((n, 1), CLS), tokens], 1), labels
