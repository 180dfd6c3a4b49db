"""`python -m lstm_gpu.check`: the same as `lstm-gpu-check`."""
import sys

from .cli import main

sys.exit(main())
