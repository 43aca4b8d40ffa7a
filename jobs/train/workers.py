"""The collectives a cell's training needs, over its workers.

`Workers` is what jobs/train/job.py calls; `HorovodWorkers` implements it with
Horovod (Gloo or MPI), `SingleWorker` for a 1-worker cell, where every collective is
the identity. A 1-worker cell therefore never imports Horovod: it runs, and is
measured, on any machine with torch alone (a CUDA build without Horovod, say), and
its step has no Horovod hook in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch is imported by the job itself, not by the modules that plan or launch it
    import torch


class Workers(Protocol):
    size: int
    rank: int
    local_rank: int
    local_size: int
    nodes: int
    controller: str  # what the collectives run on: gloo, mpi or none

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer whose step averages gradients over the workers (and holds the state to save)."""

    def broadcast_object(self, obj: Any, name: str) -> Any: ...

    def broadcast_parameters(self, state_dict: dict[str, torch.Tensor]) -> None: ...

    def allgather_object(self, obj: Any, name: str) -> list[Any]: ...

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor: ...

    def max(self, tensor: torch.Tensor, name: str) -> torch.Tensor: ...

    def average_in_place(self, tensors: list[torch.Tensor], name: str) -> None: ...

    def barrier(self) -> None: ...


class SingleWorker:
    """One worker: nothing to exchange."""

    size, rank, local_rank, local_size, nodes = 1, 0, 0, 1, 1
    controller = "none"

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
        return optimizer

    def broadcast_object(self, obj: Any, name: str) -> Any:
        return obj

    def broadcast_parameters(self, state_dict: dict[str, torch.Tensor]) -> None:
        pass

    def allgather_object(self, obj: Any, name: str) -> list[Any]:
        return [obj]

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        return tensor

    def max(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        return tensor

    def average_in_place(self, tensors: list[torch.Tensor], name: str) -> None:
        pass

    def barrier(self) -> None:
        pass


class HorovodWorkers:
    """Horovod's collectives; each call that talks to the others is marked `# Horovod:`."""

    def __init__(self, controller: str) -> None:
        import horovod.torch as hvd

        if controller == "mpi" and not hvd.mpi_built():
            raise RuntimeError("launcher.controller = 'mpi', but this Horovod was built without MPI: "
                               "rerun setup.sh with an MPI (mpicxx) on PATH, or use controller 'gloo'")
        hvd.init()  # Horovod: initialise (Gloo: from rendezvous.join's HOROVOD_* variables; MPI: from PMIx)
        self.hvd = hvd
        self.size, self.rank = hvd.size(), hvd.rank()
        self.local_rank, self.local_size, self.nodes = hvd.local_rank(), hvd.local_size(), hvd.cross_size()
        self.controller = "mpi" if hvd.mpi_enabled() else "gloo"  # what Horovod runs on, not what was asked

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> torch.optim.Optimizer:
        # Horovod: average gradients with allreduce at each step. The wrapper is a new
        # optimizer object holding the state (momentum, Adam's moments): the one to save.
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    def broadcast_object(self, obj: Any, name: str) -> Any:
        # Horovod: named, since the default name is the object's type, which differs where
        # only the root holds the object.
        return self.hvd.broadcast_object(obj, root_rank=0, name=name)

    def broadcast_parameters(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.hvd.broadcast_parameters(state_dict, root_rank=0)  # Horovod: everyone starts from rank 0's

    def allgather_object(self, obj: Any, name: str) -> list[Any]:
        return list(self.hvd.allgather_object(obj, name=name))  # Horovod

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        return self.hvd.allreduce(tensor, op=self.hvd.Sum, name=name)  # Horovod

    def max(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        return self.hvd.allreduce(tensor, op=self.hvd.Max, name=name)  # Horovod

    def average_in_place(self, tensors: list[torch.Tensor], name: str) -> None:
        averaged = self.hvd.grouped_allreduce(tensors, op=self.hvd.Average, name=name)  # Horovod
        for tensor, mean in zip(tensors, averaged):
            tensor.copy_(mean)

    def barrier(self) -> None:
        self.hvd.barrier()  # Horovod


def start_workers(num_tasks: int, controller: str) -> Workers:
    """Horovod for several workers; none for one."""
    if num_tasks == 1:
        return SingleWorker()
    return HorovodWorkers(controller)
