"""GPU plumbing: the cuDNN and cuBLAS bindings (one library finder, `_libload`), the GEMM
planner (`gemm_plan`) and the CUDA kernel loader (`kernels`)."""
