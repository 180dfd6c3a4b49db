"""GPU plumbing: the cuDNN binding and the CUDA kernel loader."""
