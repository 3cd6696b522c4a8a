"""``softdiff train``'s work: train the run, then say where its samples and models are."""
from __future__ import annotations

import json

from accelerate import PartialState

from softdiff.studies.training_callbacks import callbacks_from_config
from softdiff.training.config import TrainConfig
from softdiff.training.trainer import train


def run(args, cfg: TrainConfig) -> int:
    out = train(cfg, resume=args.resume, quiet=args.quiet, stop_after=args.stop_after,
                callbacks=callbacks_from_config(cfg))
    if not PartialState().is_main_process:
        return 0
    if not json.loads((out / "train_summary.json").read_text())["finished"]:
        print(f"stopped early: continue with --resume latest (checkpoints in {out / 'checkpoints'})")
        return 0
    print(f"done: samples in {out / 'samples'}, model in {out / 'model_ema'} (EMA) and {out / 'model'}")
    print(f"sample more with: softdiff sample {out} --num-samples 64 --output-dir {out / 'samples_more'}")
    return 0
