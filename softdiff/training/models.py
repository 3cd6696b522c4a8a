"""Build a score net from a config (trained nets are saved as pipelines: ``SoftdiffPipeline.for_training_run``)."""
from __future__ import annotations

from softdiff.data import Dataset
from softdiff.nets import ScoreMLP, ScoreTransformer, TwoLayerScoreNet
from softdiff.training.config import TrainConfig


def build_model(cfg: TrainConfig, dataset: Dataset):
    """The score net that ``cfg.model`` describes, sized for ``dataset``."""
    m = cfg.model
    classes = dataset.num_classes if cfg.data.class_conditional else None
    if m.type == "ScoreTransformer":
        channels, size, _ = dataset.shape
        return ScoreTransformer(sample_size=size, in_channels=channels, patch_size=m.patch_size,
                                hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                                activation=m.activation, attention_normalization=m.attention_normalization,
                                width_mult=m.width_mult, num_registers=m.num_registers,
                                num_class_embeds=classes, dropout=m.dropout, long_skips=m.long_skips,
                                conv_out=m.conv_out, conv_stem=m.conv_stem, conv_decoder=m.conv_decoder,
                                conditioning=m.conditioning)
    dim = 1
    for s in dataset.shape:
        dim *= s
    if m.type == "ScoreMLP":
        return ScoreMLP(dim=dim, hidden_size=m.hidden_size, num_blocks=m.num_layers, activation=m.activation,
                        width_mult=m.width_mult, fourier_features=m.fourier_features,
                        fourier_scale=m.fourier_scale, dropout=m.dropout, num_class_embeds=classes)
    d = cfg.diffusion
    return TwoLayerScoreNet(dim=dim, width=m.width, sigma=m.sigma, coupled=m.coupled, activation=m.activation,
                            t_min=d.ou_t_min, t_max=d.ou_t_max, num_train_timesteps=d.num_train_timesteps,
                            seed=cfg.train.seed)
