"""`python -m dispatchtune.train ...` = `dispatchtune train ...`: the form `accelerate launch -m dispatchtune.train
--recipe R` needs (it launches modules, not console scripts)."""

import sys

from dispatchtune.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
