"""Score networks for vectors: stacked two-layer blocks (``ScoreMLP``) and the paper's two-layer net."""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from softdiff.nets.blocks import TwoLayerBlock
from softdiff.nets.embeddings import FourierFeatures, SinusoidalTimeEmbedding, class_embedding, timestep_tensor
from softdiff.nets.two_layer import TwoLayerNet


class ScoreMLP(ModelMixin, ConfigMixin):
    """Score net for vectors (B, dim); any (B, ...) input whose trailing size is ``dim`` is flattened and restored."""

    @register_to_config
    def __init__(
        self,
        dim: int = 2,                   # data dimension (2 for the toy sets; C*H*W for flattened images)
        hidden_size: int = 128,         # channels of the residual stream
        num_blocks: int = 4,            # number of TwoLayerBlocks (4: the training config's default since the start)
        activation: str = "softmax",    # activation of every block (softdiff.nets.ACTIVATIONS)
        width_mult: int = 4,            # hidden units per channel inside each block
        fourier_features: int = 0,      # random Fourier features of the input (0: off)
        fourier_scale: float = 1.0,     # frequency scale of those features
        dropout: float = 0.0,
        num_class_embeds: int | None = None,  # number of classes for conditioning (None: unconditional)
    ):
        super().__init__()
        self.fourier = FourierFeatures(dim, fourier_features, fourier_scale) if fourier_features else None
        in_dim = self.fourier.out_dim if self.fourier is not None else dim
        self.inp = nn.Linear(in_dim, hidden_size)
        self.time_embed = SinusoidalTimeEmbedding(hidden_size)
        self.class_embed = nn.Embedding(num_class_embeds, hidden_size) if num_class_embeds else None
        self.blocks = nn.ModuleList(
            TwoLayerBlock(hidden_size, activation, width_mult, cond_dim=hidden_size, dropout=dropout)
            for _ in range(num_blocks)
        )
        self.out_norm = nn.LayerNorm(hidden_size)
        self.out = nn.Linear(hidden_size, dim)

    def forward(self, sample: Tensor, timestep, class_labels: Tensor | None = None) -> Tensor:
        shape = sample.shape
        x = sample.reshape(shape[0], -1)
        if self.fourier is not None:
            x = self.fourier(x)
        cond = self.time_embed(timestep_tensor(timestep, shape[0], sample.device))
        if self.class_embed is not None and class_labels is not None:
            cond = cond + class_embedding(self.class_embed, class_labels)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, torch.nn.functional.silu(cond))
        return self.out(self.out_norm(h)).reshape(shape)


class TwoLayerScoreNet(ModelMixin, ConfigMixin):
    """docs/theory.md 1.5: the two-layer softmax network as an x0-predictor ``f(concat(x, t))``.

    The scheduler timestep ``k`` (0..num_train_timesteps-1, fractional allowed) is mapped to the OU time
    ``t = t_min + k (t_max - t_min) / (num_train_timesteps - 1)`` before it is concatenated.
    """

    @register_to_config
    def __init__(
        self,
        dim: int = 2,                   # data dimension
        width: int = 1024,              # hidden units m
        sigma: float = 1.0,             # std of the initial W
        coupled: bool = True,           # paired init so that F = 0 at init
        activation: str = "softmax",    # softmax | relu | exp (the theory's comparison networks)
        t_min: float = 0.01,            # OU time of timestep 0
        t_max: float = 3.0,             # OU time of the last timestep
        num_train_timesteps: int = 1000,
        seed: int = 0,                  # init seed of W and A (A is a buffer, saved with the weights)
    ):
        super().__init__()
        self.net = TwoLayerNet(dim + 1, dim, width, sigma=sigma, coupled=coupled, activation=activation,
                                   seed=seed)

    def forward(self, sample: Tensor, timestep, class_labels: Tensor | None = None) -> Tensor:
        c = self.config
        k = timestep_tensor(timestep, sample.shape[0], sample.device)  # float32: bf16 would turn 999 into 1,000
        t = c.t_min + k * (c.t_max - c.t_min) / (c.num_train_timesteps - 1)
        x = torch.cat([sample.reshape(sample.shape[0], -1).to(t.dtype), t[:, None]], dim=-1)
        return self.net(x).reshape(sample.shape).to(sample.dtype)
