"""Train a score model: ``python train.py [--config configs/X.yaml] [--output-dir DIR] [key.sub=value ...]``."""
import sys

from softdiff.cli import run_main
from softdiff.commands.train import main

if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
