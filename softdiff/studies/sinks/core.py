"""Train one :class:`SinkTransformer` per (attention normalisation, seed) and record, over training, the
attention mass on the first token per layer and head, the task accuracy and the massive-activation ratio.

Measured with the probes of ``softdiff.studies.probes.attention`` on a fixed evaluation set:
``first_mass`` is :func:`key_shares` of key 0 over the scored queries (rows renormalised to sum 1; for induction
queries ``1 .. N-3``, the authors' ``rel_attn_bos`` rows), ``row_mass`` the raw total weight per row (1 for
normalised maps), ``readout_max`` the largest weight of the readout query (CLS / last position, renormalised;
the authors' ``rel_attn_max``) and ``massive`` the max / median ``|h|`` of each block's output.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from softdiff.errors import ConfigError, check_at_most, check_choice, check_positive, check_total
from softdiff.nets.attention import ATTENTION_NORMALIZATIONS
from softdiff.studies.probes.attention import AttentionRecorder, key_shares, massive_activation, row_mass
from softdiff.studies.sinks.model import POSITIONAL, SinkTransformer
from softdiff.studies.sinks.tasks import classification_batch, induction_batch

TASKS = ("induction", "classification")
# Sizes a user can type, bounded before anything is allocated (far above the presets).
LIMITS = {"seeds": 1000, "steps": 10_000_000, "batch_size": 65_536, "embed_dim": 8192, "num_layers": 128,
          "num_heads": 1024, "mlp_ratio": 64, "vocab_size": 1_000_000, "seq_length": 4096, "num_labels": 100_000,
          "num_train": 10_000_000, "num_eval": 1_000_000, "threads": 1024}
MAX_ENTRIES = 2**28  # of the drawn data, of the parameters and of one batch's activations (about 1 GB in float32)


@dataclass
class SinksConfig:
    task: str = "induction"            # induction (causal LM, BOS first) or classification (CLS readout)
    attentions: list[str] = field(default_factory=lambda: ["softmax", "sigmoid_norm", "relu_norm", "sigmoid"])
    seeds: int = 3
    seed: int = 0
    steps: int = 600                    # AdamW steps per run
    batch_size: int = 128
    lr: float = 1e-3
    embed_dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    positional: str = "concat"          # concat / add / no
    causal: bool = True
    vocab_size: int = 50                # including BOS / CLS (token 0)
    seq_length: int = 13                # induction: including BOS and the final pair; classification: with CLS
    shift_query_token: bool = True      # induction: the repeated token is shifted by vocab_size
    aux_loss_weight: float = 0.2        # induction: weight of the next-token loss at the other positions
    num_labels: int = 4                 # classification
    num_train: int = 20000
    num_eval: int = 512
    eval_every: int = 50
    threads: int = 2
    output_dir: Optional[str] = None

    def validate(self) -> None:
        check_choice("task", self.task, TASKS)
        check_choice("positional", self.positional, POSITIONAL)
        if not self.attentions:
            raise ConfigError("attentions=[] must name at least one attention normalisation.")
        for name in self.attentions:
            check_choice("attentions", name, list(ATTENTION_NORMALIZATIONS))
        for key in ("seeds", "steps", "batch_size", "embed_dim", "num_layers", "num_heads", "num_train",
                    "num_eval", "eval_every", "threads", "lr", "mlp_ratio"):
            check_positive(key, getattr(self, key))
        for key, limit in LIMITS.items():
            check_at_most(key, getattr(self, key), limit)
        self._check_sizes()
        if not math.isfinite(self.lr):
            raise ConfigError(f"lr={self.lr!r} must be a finite number.")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be non-negative.")
        if self.embed_dim % self.num_heads or (self.positional == "concat" and self.embed_dim % (2 * self.num_heads)):
            raise ConfigError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads} "
                              "(by 2 * num_heads with positional=concat).")
        if self.task == "induction" and not 4 <= self.seq_length <= self.vocab_size + 2:
            raise ConfigError(f"seq_length={self.seq_length} must be in [4, vocab_size + 2] for the induction task.")
        if self.task == "classification":
            group, rest = divmod(self.vocab_size - 1, self.num_labels)
            if self.num_labels < 2 or rest or not 2 <= self.seq_length <= group + 1:
                raise ConfigError(f"classification needs num_labels >= 2 dividing vocab_size - 1 "
                                  f"({self.vocab_size - 1}) and seq_length in [2, {group + 1}]; got "
                                  f"num_labels={self.num_labels}, seq_length={self.seq_length}.")
        if not 0 <= self.aux_loss_weight < float("inf"):
            raise ConfigError(f"aux_loss_weight={self.aux_loss_weight} must be a finite non-negative number.")

    def _check_sizes(self) -> None:
        """The data draw (every example draws ``vocab_size`` numbers), the parameters and one batch's activations."""
        check_total("the drawn data", (self.num_train + self.num_eval) * self.vocab_size, MAX_ENTRIES,
                    {"num_train": self.num_train, "num_eval": self.num_eval, "vocab_size": self.vocab_size})
        params = 4 * self.vocab_size * self.embed_dim + self.num_layers * self.embed_dim ** 2 * (4 + 2 * self.mlp_ratio)
        check_total("the model", int(params), MAX_ENTRIES, {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
                                                            "num_layers": self.num_layers, "mlp_ratio": self.mlp_ratio})
        acts = self.batch_size * self.seq_length * self.num_layers * (
            self.embed_dim * (6 + self.mlp_ratio) + self.num_heads * self.seq_length)
        check_total("one batch's activations", int(acts), MAX_ENTRIES,
                    {"batch_size": self.batch_size, "seq_length": self.seq_length, "embed_dim": self.embed_dim,
                     "num_layers": self.num_layers, "num_heads": self.num_heads})


def _data(cfg: SinksConfig, n: int, gen: torch.Generator):
    if cfg.task == "induction":
        return induction_batch(n, cfg.vocab_size, cfg.seq_length, cfg.shift_query_token, gen)
    return classification_batch(n, cfg.vocab_size, cfg.seq_length, cfg.num_labels, gen)


def build_model(cfg: SinksConfig, normalization: str) -> SinkTransformer:
    if cfg.task == "induction":
        vocab = cfg.vocab_size * (2 if cfg.shift_query_token else 1)
        out = vocab
    else:
        vocab, out = cfg.vocab_size, cfg.num_labels
    return SinkTransformer(vocab, out, cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.mlp_ratio, normalization,
                           cfg.causal, cfg.positional, max_len=cfg.seq_length + 1)


def _loss_and_accuracy(cfg: SinksConfig, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    if cfg.task == "induction":  # the authors' objective: the last position plus aux_loss_weight x the others
        main = F.cross_entropy(logits[:, -1], targets[:, -1])
        loss = main + cfg.aux_loss_weight * F.cross_entropy(logits[:, :-1].transpose(1, 2), targets[:, :-1])
        return loss, float((logits[:, -1].argmax(-1) == targets[:, -1]).double().mean())
    readout = logits[:, 0]  # the CLS token
    return F.cross_entropy(readout, targets), float((readout.argmax(-1) == targets).double().mean())


@torch.no_grad()
def measure(cfg: SinksConfig, model: SinkTransformer, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """Accuracy, loss and the per-layer / per-head attention statistics on one evaluation batch."""
    model.eval()
    with AttentionRecorder(model) as rec:
        logits = model(inputs)
    loss, acc = _loss_and_accuracy(cfg, logits, targets)
    first, rows, readout = [], [], []
    for probs in rec.probs:
        scored = probs[:, :, :-2] if cfg.task == "induction" else probs  # the authors' query rows 1 .. N-3
        first.append(key_shares(scored, 1)[:, 0])
        rows.append(row_mass(scored, 1))
        r = probs[:, :, -1 if cfg.task == "induction" else 0].abs().double()
        readout.append((r.max(-1).values / (r.sum(-1) + 1e-12)).mean(0))
    model.train()
    return {"loss": float(loss), "accuracy": acc,
            "first_mass": torch.stack(first).tolist(), "row_mass": torch.stack(rows).tolist(),
            "readout_max": torch.stack(readout).tolist(),
            "massive": [massive_activation(h)[0] for h in rec.hidden]}


def train_one(cfg: SinksConfig, normalization: str, seed: int,
              progress: Callable[[str], None] | None = None) -> dict:
    """One run: the data and the initialisation are fixed by ``seed`` (shared by every normalisation)."""
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = _data(cfg, cfg.num_train, gen)
    eval_x, eval_y = _data(cfg, cfg.num_eval, gen)
    torch.manual_seed(seed)
    model = build_model(cfg, normalization)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    history, order, pos, start = {"step": []}, torch.randperm(cfg.num_train, generator=gen), 0, time.perf_counter()

    def record(step: int) -> None:
        stats = measure(cfg, model, eval_x, eval_y)
        history["step"].append(step)
        for k, v in stats.items():
            history.setdefault(k, []).append(v)

    record(0)
    for step in range(1, cfg.steps + 1):
        if pos + cfg.batch_size > cfg.num_train:  # a new epoch
            order, pos = torch.randperm(cfg.num_train, generator=gen), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        loss, _ = _loss_and_accuracy(cfg, model(train_x[idx]), train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record(step)
    seconds = time.perf_counter() - start
    if progress is not None:
        progress(f"{normalization:<12} seed {seed}: accuracy {history['accuracy'][-1]:.3f}, first-token mass "
                 f"{np.mean(history['first_mass'][-1]):.3f} (mean over layers and heads), {seconds:.1f} s")
    return {"normalization": normalization, "seed": seed, "seconds": seconds, "history": history}


def run_study(cfg: SinksConfig, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Every (normalisation, seed) run, seeds ``cfg.seed .. cfg.seed + seeds - 1``."""
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return [train_one(cfg, norm, cfg.seed + i, progress) for norm in cfg.attentions for i in range(cfg.seeds)]
    finally:
        torch.set_num_threads(before)
