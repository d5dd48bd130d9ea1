#!/usr/bin/env python
"""Train or search on a NAS-Bench-360 task: ``python train.py --task TASK --method METHOD [overrides]``.

With no arguments: WRN-16-4 on a small Darcy Flow set generated locally (a few minutes on a CPU).
See README.md and ``python train.py --help``.
"""

import sys
from pathlib import Path

from nb360.cli import main

if __name__ == "__main__":
    sys.exit(main(config_dir=Path(__file__).resolve().parent / "configs"))
