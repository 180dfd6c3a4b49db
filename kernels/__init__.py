"""CUDA sources shipped as package data (installed as `lstm_gpu.kernels`)."""
