"""PyTorch's DistributedDataParallel for a cell's workers (jobs/train/workers.py has the interface).

One process per worker (per GPU), from the same submitit task placement as Horovod:
rank 0 hosts torch.distributed's TCPStore on a free port and publishes its address in
the cell directory (jobs/train/rendezvous.py), the others connect to it. The process
group runs Gloo on CPUs; with a GPU, CUDA tensors go over NCCL and the CPU tensors of
the epoch's metrics over Gloo. DDP averages the gradients during the backward pass,
bucket by bucket, so they are averaged once backward returns. Every call that talks
to the other workers is marked `# DDP:`.

As with Horovod, each rank keeps its own BatchNorm statistics during the epoch
(broadcast_buffers off: DDP's default would overwrite them with rank 0's at every
forward pass) and the job averages them after it.
"""

from __future__ import annotations

import contextlib
import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.train import rendezvous

if TYPE_CHECKING:
    import torch

    from jobs.plan.params import TrainParams
    from jobs.train.rendezvous import TaskPlacement

DEFAULT_BUCKET_MB = 25.0  # DistributedDataParallel's bucket_cap_mb default
TIMEOUT = datetime.timedelta(minutes=10)  # a collective waits this long for a rank that hangs


class DDPWorkers:
    def __init__(self, placement: TaskPlacement, cell_dir: Path, params: TrainParams) -> None:
        import torch
        import torch.distributed as dist

        self.dist = dist
        on_gpu = torch.cuda.is_available()
        store = rendezvous.torch_store(placement, cell_dir, TIMEOUT)
        # DDP: one process group; Gloo carries CPU tensors, NCCL (where there is a GPU) CUDA ones.
        dist.init_process_group("cpu:gloo,cuda:nccl" if on_gpu else "gloo", store=store, rank=placement.rank,
                                world_size=placement.num_tasks, timeout=TIMEOUT)
        self.size, self.rank = dist.get_world_size(), dist.get_rank()
        self.local_rank, self.local_size, self.nodes = placement.local_rank, placement.local_size, placement.num_nodes
        self.controller = "nccl" if on_gpu else "gloo"
        self.bucket_mb = params.bucket_mb if params.bucket_mb is not None else DEFAULT_BUCKET_MB
        self.compression = params.gradient_compression

    def communication(self) -> dict[str, Any]:
        return {"backend": "ddp", "controller": self.controller, "gradient_compression": self.compression,
                "bucket_mb": self.bucket_mb}

    def wrap(self, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = next(model.parameters()).device.type == "cuda"
        # DDP: the wrapped module averages the gradients in its backward pass (and, built, holds rank 0's weights).
        distributed = DistributedDataParallel(model, device_ids=[self.local_rank] if on_gpu else None,
                                              broadcast_buffers=False, bucket_cap_mb=self.bucket_mb)
        if self.compression == "fp16":
            distributed.register_comm_hook(None, default_hooks.fp16_compress_hook)  # DDP: fp16 on the wire
        return distributed, optimizer

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        pass  # DDP: backward returned, so the gradients are averaged

    def averaged(self, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def broadcast_object(self, obj: Any, name: str) -> Any:
        objects = [obj]
        self.dist.broadcast_object_list(objects, src=0)  # DDP
        return objects[0]

    def broadcast_parameters(self, state_dict: dict[str, torch.Tensor]) -> None:
        for tensor in state_dict.values():
            self.dist.broadcast(tensor, src=0)  # DDP: in place (the state dict's tensors are the module's)

    def allgather_object(self, obj: Any, name: str) -> list[Any]:
        gathered: list[Any] = [None] * self.size
        self.dist.all_gather_object(gathered, obj)  # DDP
        return gathered

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        reduced = tensor.clone()
        self.dist.all_reduce(reduced, op=self.dist.ReduceOp.SUM)  # DDP
        return reduced

    def max(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        reduced = tensor.clone()
        self.dist.all_reduce(reduced, op=self.dist.ReduceOp.MAX)  # DDP
        return reduced

    def average_in_place(self, tensors: list[torch.Tensor], name: str) -> None:
        import torch

        flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
        self.dist.all_reduce(flat, op=self.dist.ReduceOp.SUM)  # DDP: one call (Gloo has no AVG)
        flat /= self.size
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()

    def barrier(self) -> None:
        import torch

        self.dist.all_reduce(torch.zeros(1))  # DDP: a CPU tensor, so over Gloo whatever the device

    def close(self) -> None:
        self.dist.destroy_process_group()
