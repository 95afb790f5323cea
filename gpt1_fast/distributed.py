"""One process, or several under torchrun (DDP): the device, the rank and a barrier."""
from __future__ import annotations

import os

import torch


class Dist:
    """torch.distributed when launched by torchrun with WORLD_SIZE > 1, else a single process."""

    def __init__(self, device_arg=None, distributed: bool = True):
        """distributed=False: one process even under torchrun (an estimator inside a script)."""
        self.world = int(os.environ.get("WORLD_SIZE", "1")) if distributed else 1
        self.rank = int(os.environ.get("RANK", "0")) if distributed else 0
        local = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
        if device_arg is None:
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device_arg)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local if self.world > 1 else torch.cuda.current_device())
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        self.device = dev
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def close(self):
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
