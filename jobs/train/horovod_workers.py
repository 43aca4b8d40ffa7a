"""Horovod's collectives for a cell's workers (jobs/train/workers.py has the interface).

Gloo: rank 0 hosts Horovod's rendezvous server and every task sets the variables
horovodrun would set (jobs/train/rendezvous.py); MPI: Horovod initialises from PMIx.
Every call that talks to the other workers is marked `# Horovod:`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.train import rendezvous

if TYPE_CHECKING:
    import contextlib

    import torch

    from jobs.plan.params import TrainParams
    from jobs.train.rendezvous import TaskPlacement

DEFAULT_FUSION_THRESHOLD_BYTES = 128 * 2**20  # Horovod 0.28's HOROVOD_FUSION_THRESHOLD default


class HorovodWorkers:
    def __init__(self, placement: TaskPlacement, cell_dir: Path, params: TrainParams, controller: str) -> None:
        import horovod.torch as hvd

        if controller == "mpi" and not hvd.mpi_built():
            raise RuntimeError("launcher.controller = 'mpi', but this Horovod was built without MPI: "
                               "rerun setup.sh with an MPI (mpicxx) on PATH, or use controller 'gloo'")
        self._server = rendezvous.join(placement, cell_dir) if controller == "gloo" else None  # rank 0 keeps it
        if params.bucket_mb is not None:  # read by hvd.init; otherwise the site's setting, or Horovod's default
            os.environ["HOROVOD_FUSION_THRESHOLD"] = str(int(params.bucket_mb * 2**20))
        self.fusion_threshold_mb = int(os.environ.get("HOROVOD_FUSION_THRESHOLD", DEFAULT_FUSION_THRESHOLD_BYTES)) / 2**20
        self.compression = params.gradient_compression
        hvd.init()  # Horovod: initialise (Gloo: from rendezvous.join's HOROVOD_* variables; MPI: from PMIx)
        self.hvd = hvd
        self.size, self.rank = hvd.size(), hvd.rank()
        self.local_rank, self.local_size, self.nodes = hvd.local_rank(), hvd.local_size(), hvd.cross_size()
        self.controller = "mpi" if hvd.mpi_enabled() else "gloo"  # what Horovod runs on, not what was asked

    def communication(self) -> dict[str, Any]:
        return {"backend": "horovod", "controller": self.controller, "gradient_compression": self.compression,
                "bucket_mb": self.fusion_threshold_mb}

    def wrap(self, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        # Horovod: average gradients with allreduce at each step. The wrapper is a new
        # optimizer object holding the state (momentum, Adam's moments): the one to save.
        compression = self.hvd.Compression.fp16 if self.compression == "fp16" else self.hvd.Compression.none
        return model, self.hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                                    compression=compression)

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.synchronize()  # type: ignore[attr-defined]  # Horovod: wait for the averaged gradients

    def averaged(self, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[Any]:
        return optimizer.skip_synchronize()  # type: ignore[attr-defined]

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

    def close(self) -> None:
        pass  # Horovod shuts down at exit
