"""python -m thinktrace.finetune RUN_DIR --adapter NAME: train one adapter of a run folder (see launch.py)."""

import sys

import thinktrace._env  # noqa: F401  (offline settings before any library import)
from thinktrace.finetune.launch import main

if __name__ == "__main__":
    sys.exit(main())
