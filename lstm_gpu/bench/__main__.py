"""`python -m lstm_gpu.bench`: the same as the `lstm-gpu-bench` command."""
import sys

from .cli import main

sys.exit(main())
