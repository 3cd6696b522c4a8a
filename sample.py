"""Sample from a trained model: ``python sample.py RUN_DIR/model --scheduler dpm++ --steps 20 --output OUT.npz``."""
import sys

from softdiff.cli import run_main
from softdiff.diffusion.cli import main

if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
