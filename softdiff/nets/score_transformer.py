"""Score network for images: patch tokens, value-softmax attention and two-layer blocks.

Options beyond the plain stack (each defaults to the original behaviour, so older saved configs load unchanged):
U-ViT-style long skips from shallow to deep layers, a 3x3 convolution on the unpatchified output, a small
convolutional stem before the patches, and time / class conditioning as tokens instead of adaLN-Zero.
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import Tensor, nn

from softdiff.nets.attention import SelfAttention
from softdiff.nets.blocks import TwoLayerMLP
from softdiff.nets.embeddings import SinusoidalTimeEmbedding, class_embedding, timestep_tensor

CONDITIONINGS = ("adaln", "token")


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """Images (B, C, H, W) to patch tokens (B, H/p * W/p, C p p), row-major over the patch grid."""
    return rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=patch_size, p2=patch_size)


def unpatchify(tokens: Tensor, height: int, patch_size: int) -> Tensor:
    """The inverse of :func:`patchify` for images ``height`` pixels high."""
    return rearrange(tokens, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=height // patch_size, p1=patch_size,
                     p2=patch_size)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class TransformerLayer(nn.Module):
    """``x + g1 * attn(adaLN(x))`` then ``x + g2 * mlp(adaLN(x))``; gates start at zero (adaLN-Zero).

    With ``adaptive=False`` it is a plain pre-norm layer (the condition travels as a token instead).
    """

    def __init__(self, dim: int, num_heads: int, activation: str, attention_normalization: str,
                 width_mult: int, dropout: float, adaptive: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not adaptive)
        self.attn = SelfAttention(dim, num_heads, attention_normalization, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not adaptive)
        # Not zero-initialised: a zero gate times a zero output is a saddle where neither ever gets a gradient.
        self.mlp = TwoLayerMLP(dim, activation, width_mult, dropout=dropout, zero_init_output=False)
        self.modulation = nn.Linear(dim, 6 * dim) if adaptive else None
        if adaptive:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        if self.modulation is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class ScoreTransformer(ModelMixin, ConfigMixin):
    """Score net for images (B, C, H, W) with H and W divisible by ``patch_size``."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,            # image height and width
        in_channels: int = 1,
        out_channels: int | None = None,  # defaults to in_channels
        patch_size: int = 2,
        hidden_size: int = 128,          # token channels
        num_layers: int = 4,
        num_heads: int = 4,
        activation: str = "softmax",     # activation of the two-layer blocks (softdiff.nets.ACTIVATIONS)
        attention_normalization: str = "softmax",  # softmax | sigmoid | relu_norm
        width_mult: int = 4,             # hidden units per channel in the two-layer blocks
        num_registers: int = 0,          # learned register / sink tokens prepended to the patches
        num_class_embeds: int | None = None,  # classes for conditioning (None: unconditional)
        dropout: float = 0.0,
        long_skips: bool = False,        # U-ViT: layer i's output joins layer L-1-i's input (concat + linear)
        conv_out: bool = False,          # a 3x3 convolution on the unpatchified output (smooths patch seams)
        conv_stem: int = 0,              # channels of a 3x3 convolution before patchifying (0: none)
        conv_decoder: int = 0,           # channels of a full-resolution conv head after unpatchifying (0: none):
                                         # two 3x3 convolutions that also see the stem's features (a U-Net skip)
        conditioning: str = "adaln",     # adaln (adaLN-Zero modulation) | token (time/class as extra tokens)
    ):
        super().__init__()
        if sample_size % patch_size:
            raise ValueError(f"sample_size={sample_size} must be divisible by patch_size={patch_size}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {conditioning!r}; choose one of: {', '.join(CONDITIONINGS)}")
        out_channels = out_channels or in_channels
        adaptive = conditioning == "adaln"
        self.stem = nn.Sequential(nn.Conv2d(in_channels, conv_stem, 3, padding=1), nn.SiLU()) if conv_stem else None
        self.patch_embed = nn.Linear((conv_stem or in_channels) * patch_size**2, hidden_size)
        # Learned, but started at DiT's fixed 2-D sin-cos table: with a small random start the tokens hardly know
        # where they are and training sits on a plateau (digits reached FID 10 in ~1.3x more steps).
        grid = sample_size // patch_size
        table_dim = -(-hidden_size // 4) * 4  # the table needs a multiple of 4 channels; extra ones are dropped
        pos = get_2d_sincos_pos_embed(table_dim, grid, base_size=grid, output_type="pt")[:, :hidden_size]
        self.pos_embed = nn.Parameter(pos.float()[None])
        self.registers = nn.Parameter(torch.randn(1, num_registers, hidden_size) * 0.02) if num_registers else None
        self.time_embed = SinusoidalTimeEmbedding(hidden_size)
        self.class_embed = nn.Embedding(num_class_embeds, hidden_size) if num_class_embeds else None
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, num_heads, activation, attention_normalization, width_mult, dropout,
                             adaptive)
            for _ in range(num_layers)
        )
        # Tokens before the patches: registers, then (token conditioning) the time token and the class token.
        self.num_prefix = num_registers + (0 if adaptive else 1 + (num_class_embeds is not None))
        for layer in self.layers:
            layer.attn.num_special_tokens = self.num_prefix
        self.skips = nn.ModuleList(nn.Linear(2 * hidden_size, hidden_size) for _ in range(num_layers // 2)) \
            if long_skips else None
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=not adaptive)
        self.final_modulation = nn.Linear(hidden_size, 2 * hidden_size) if adaptive else None
        self.final = nn.Linear(hidden_size, (conv_decoder or out_channels) * patch_size**2)
        if adaptive:
            nn.init.zeros_(self.final_modulation.weight)
            nn.init.zeros_(self.final_modulation.bias)
        self.decoder = None
        if conv_decoder:
            # Pixel detail that a patch's linear map cannot draw: full-resolution convolutions over the token
            # output and the stem's features; the last one starts at zero so the net starts at output zero.
            self.decoder = nn.Sequential(nn.Conv2d(conv_decoder + conv_stem, conv_decoder, 3, padding=1), nn.SiLU(),
                                         nn.Conv2d(conv_decoder, out_channels, 3, padding=1))
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)
            nn.init.normal_(self.final.weight, std=0.02)
        if conv_out:
            # The convolution starts as the identity; the linear before it must then not start at zero, or the
            # convolution's weights would get no gradient at the first step.
            self.output_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            nn.init.dirac_(self.output_conv.weight)
            nn.init.zeros_(self.output_conv.bias)
            nn.init.normal_(self.final.weight, std=0.02)
        else:
            self.output_conv = None
            if self.decoder is None:
                nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def forward(self, sample: Tensor, timestep, class_labels: Tensor | None = None) -> Tensor:
        c = self.config
        b, _, h, w = sample.shape
        p = c.patch_size
        stem = self.stem(sample) if self.stem is not None else sample
        x = self.patch_embed(patchify(stem, p))
        x = x + self.pos_embed
        cond = self.time_embed(timestep_tensor(timestep, b, sample.device))
        labels = (class_embedding(self.class_embed, class_labels)
                  if self.class_embed is not None and class_labels is not None else None)
        prefix = [self.registers.expand(b, -1, -1)] if self.registers is not None else []
        if self.final_modulation is None:  # token conditioning
            prefix.append(cond[:, None])
            if self.class_embed is not None:
                prefix.append((labels if labels is not None else torch.zeros_like(cond))[:, None])
        elif labels is not None:
            cond = cond + labels
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
        cond = nn.functional.silu(cond)
        skips, n_in = [], len(self.skips) if self.skips is not None else 0
        for i, layer in enumerate(self.layers):
            if self.skips is not None and i >= len(self.layers) - n_in:
                x = self.skips[len(self.layers) - 1 - i](torch.cat([x, skips.pop()], dim=-1))
            x = layer(x, cond)
            if i < n_in:
                skips.append(x)
        x = self.final_norm(x[:, self.num_prefix:])
        if self.final_modulation is not None:
            shift, scale = self.final_modulation(cond).chunk(2, dim=-1)
            x = _modulate(x, shift, scale)
        x = unpatchify(self.final(x), h, p)
        if self.decoder is not None:
            x = self.decoder(torch.cat([x, stem], dim=1) if self.stem is not None else x)
        return self.output_conv(x) if self.output_conv is not None else x
