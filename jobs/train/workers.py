"""The collectives a cell's training needs, over its workers: one small interface.

jobs/train/job.py runs one training loop for every backend and calls only `Workers`.
What differs between backends sits behind it, one module each:

- `SingleWorker` (here): a 1-worker cell, where every collective is the identity. It
  imports no distributed library, so a 1-worker cell runs, and is measured, on any
  machine with torch alone (a CUDA build without Horovod, say), with no hook in its step.
- `HorovodWorkers` (jobs/train/horovod_workers.py): Horovod over Gloo or MPI.
- `DDPWorkers` (jobs/train/ddp_workers.py): PyTorch's DistributedDataParallel, over Gloo
  on CPUs and NCCL on GPUs.

Each starts from the same submitit task placement (jobs/train/rendezvous.py) and
averages the gradients of a step the way its library does; the training loop asks for
the averaged gradients (`synchronize`) only where it reads them between averaging and
the update (the gradient noise scale, a gradient scaler).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch is imported by the job itself, not by the modules that plan or launch it
    import torch

    from jobs.plan.params import TrainParams
    from jobs.train.rendezvous import TaskPlacement


class Workers(Protocol):
    size: int
    rank: int
    local_rank: int
    local_size: int
    nodes: int
    controller: str  # what the collectives run on: gloo, mpi, nccl or none

    def communication(self) -> dict[str, Any]:
        """The settings of the gradient exchange as they took effect (for the cell's metadata)."""

    def wrap(self, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """(the module to run the forward pass through, the optimizer to step): together they average
        the gradients over the workers. The optimizer returned holds the state to save (Horovod's is a
        new object); the model given stays the one to save and broadcast."""

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        """Return once the parameters' .grad hold this step's averaged gradients."""

    def averaged(self, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[Any]:
        """Around an optimizer step after `synchronize`: the step must not average again."""

    def broadcast_object(self, obj: Any, name: str) -> Any: ...

    def broadcast_parameters(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Rank 0's tensors, in place, on every rank."""

    def allgather_object(self, obj: Any, name: str) -> list[Any]: ...

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor: ...

    def max(self, tensor: torch.Tensor, name: str) -> torch.Tensor: ...

    def average_in_place(self, tensors: list[torch.Tensor], name: str) -> None: ...

    def barrier(self) -> None: ...

    def close(self) -> None: ...


class SingleWorker:
    """One worker: nothing to exchange."""

    size, rank, local_rank, local_size, nodes = 1, 0, 0, 1, 1
    controller = "none"

    def communication(self) -> dict[str, Any]:
        return {"backend": "none"}

    def wrap(self, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        return model, optimizer

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def averaged(self, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

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

    def close(self) -> None:
        pass


def start_workers(placement: TaskPlacement, cell_dir: Path, params: TrainParams, controller: str) -> Workers:
    """The cell's backend (params.backend) for several workers; none for one."""
    if placement.num_tasks == 1:
        return SingleWorker()
    if params.backend == "ddp":
        from jobs.train.ddp_workers import DDPWorkers

        return DDPWorkers(placement, cell_dir, params)
    from jobs.train.horovod_workers import HorovodWorkers

    return HorovodWorkers(placement, cell_dir, params, controller)
