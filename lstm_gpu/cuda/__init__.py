"""GPU plumbing: the cuDNN and cuBLAS bindings (one library finder, `_libload`), the GEMM
planner (`gemm_plan`), the CUDA kernel loader (`kernels`) and stream identity (`streams`)."""
