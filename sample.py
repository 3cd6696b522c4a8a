"""Sample from a trained model: ``python sample.py RUN_DIR --num-samples 64 --output OUT.npz`` (same as
``softdiff sample``)."""
import sys

from softdiff.cli import run_main
from softdiff.commands.sample import main

if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
