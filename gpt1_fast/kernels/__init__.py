"""Fused Triton kernels. `_op.py` is the one registration and launch layer (torch.library ops for
torch.compile, the direct eager path, each op's `Tuning` object); each fused op is then three files:
`<op>_kernels.py` (@triton.jit), `<op>_configs.py` (candidates and the committed choice table) and
`<op>.py` (host side and public API). The model reaches them only through gpt1_fast.ops."""
