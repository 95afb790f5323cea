"""Fused Triton kernels. Each module holds one fused op: its kernels, its autograd binding and its
torch.library registration. The model reaches them only through gpt1_fast.ops."""
