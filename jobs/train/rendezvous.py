"""How a cell's tasks find each other, from submitit's JobEnvironment instead of a launcher.

Rank 0 starts a server on a free port and writes its address into the cell directory,
tagged with the job id and attempt; every other task reads it from there. This needs
no resolvable node names and no port agreed in advance, so cells sharing a node never
collide. For Horovod (instead of horovodrun) the server is Horovod's own rendezvous
server, and every task sets the HOROVOD_* variables horovodrun would have set (see
horovod/runner/gloo_run.py) before hvd.init(); for DDP (instead of torchrun) it is
torch.distributed's TCPStore.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from jobs.cell import replaced_atomically

RENDEZVOUS_FILE = "rendezvous.json"


@dataclass(frozen=True)
class TaskPlacement:
    """Where one task of a job runs: what submitit's JobEnvironment tells it."""

    rank: int
    local_rank: int
    node: int
    num_tasks: int
    hostnames: tuple[str, ...]  # one per node, in node order
    job_id: str
    attempt: int  # Slurm's restart count: a requeued job is a new rendezvous

    @property
    def num_nodes(self) -> int:
        return len(self.hostnames)

    @property
    def local_size(self) -> int:
        return self.num_tasks // self.num_nodes

    @property
    def hostname(self) -> str:
        return self.hostnames[self.node]


def placement_from_submitit() -> TaskPlacement:
    import submitit

    env = submitit.JobEnvironment()
    hostnames = tuple(env.hostnames) if env.num_nodes > 1 else (node_name(),)
    return TaskPlacement(
        rank=env.global_rank,
        local_rank=env.local_rank,
        node=env.node,
        num_tasks=env.num_tasks,
        hostnames=hostnames,
        job_id=str(env.job_id),
        attempt=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    )


def node_name() -> str:
    # Slurm's node name tells apart two slurmd on one host; the host name does elsewhere.
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def slot_environment(placement: TaskPlacement) -> dict[str, str]:
    """The per-task variables horovodrun's create_slot_env_vars would set."""
    if placement.num_tasks % placement.num_nodes:
        raise ValueError(
            f"{placement.num_tasks} tasks on {placement.num_nodes} nodes: "
            "Horovod needs the same number of tasks on every node"
        )
    if placement.rank // placement.local_size != placement.node:
        raise ValueError(
            f"rank {placement.rank} runs on node {placement.node}, but Horovod expects ranks "
            "in blocks per node: submit with Slurm's default --distribution=block"
        )
    return {
        "HOROVOD_HOSTNAME": placement.hostname,
        "HOROVOD_RANK": str(placement.rank),
        "HOROVOD_SIZE": str(placement.num_tasks),
        "HOROVOD_LOCAL_RANK": str(placement.local_rank),
        "HOROVOD_LOCAL_SIZE": str(placement.local_size),
        "HOROVOD_CROSS_RANK": str(placement.node),
        "HOROVOD_CROSS_SIZE": str(placement.num_nodes),
    }


def rendezvous_environment(addr: str, port: int, iface: str) -> dict[str, str]:
    """The job-wide variables horovodrun's create_run_envs would set."""
    return {
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": iface,
        "NCCL_SOCKET_IFNAME": iface,
    }


def rendezvous_address(placement: TaskPlacement) -> str:
    if "SCALING_STUDY_RENDEZVOUS_ADDR" in os.environ:
        return os.environ["SCALING_STUDY_RENDEZVOUS_ADDR"]
    if placement.num_nodes == 1:
        return "127.0.0.1"
    return socket.gethostbyname(socket.gethostname())


def interface_towards(addr: str) -> str:
    """The network interface this host uses to reach addr (Gloo binds to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((addr, 9))  # UDP connect sends nothing; it only picks a route
        local_ip = probe.getsockname()[0]
    for iface, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == local_ip for a in addresses):
            return iface
    raise RuntimeError(f"no network interface holds {local_ip}, the route to {addr}")


def host_plan(placement: TaskPlacement):
    """Horovod's slot plan for the whole job, as horovodrun makes it."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts

    hosts = ",".join(f"{name}:{placement.local_size}" for name in placement.hostnames)
    return get_host_assignments(parse_hosts(hosts), placement.num_tasks)


def publish_address(placement: TaskPlacement, cell_dir: Path, port: int) -> str:
    """On rank 0: write where its server listens, for this job and attempt; returns the address."""
    addr = rendezvous_address(placement)
    record = {"job_id": placement.job_id, "attempt": placement.attempt, "addr": addr, "port": port}
    with replaced_atomically(cell_dir / RENDEZVOUS_FILE) as out:
        out.write(json.dumps(record))
    return addr


def start_server(placement: TaskPlacement, cell_dir: Path) -> object:
    """On rank 0: start Horovod's rendezvous server and publish its address."""
    from horovod.runner.http.http_server import RendezvousServer

    server = RendezvousServer(verbose=0)
    port = server.start()
    server.init(host_plan(placement))
    publish_address(placement, cell_dir, port)
    return server


def withdraw_address(cell_dir: Path) -> None:
    """On rank 0, once every task has joined: remove the published address. A job that submitit's
    local controller restarts keeps its id and attempt, so its tasks would read the old one."""
    (cell_dir / RENDEZVOUS_FILE).unlink(missing_ok=True)


def wait_for_address(placement: TaskPlacement, cell_dir: Path, timeout_s: float = 300.0) -> tuple[str, int]:
    """On every rank: read the address rank 0 published for this job and attempt."""
    path = cell_dir / RENDEZVOUS_FILE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            record = json.loads(path.read_text())
            if record["job_id"] == placement.job_id and record["attempt"] == placement.attempt:
                return record["addr"], int(record["port"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"rank 0 did not publish a rendezvous address in {path} within {timeout_s:.0f} s")


def torch_store(placement: TaskPlacement, cell_dir: Path, timeout: datetime.timedelta) -> Any:
    """torch.distributed's key-value store for init_process_group: hosted by rank 0 on a free port."""
    from torch.distributed import TCPStore

    if placement.rank == 0:
        # Not waiting for the workers here: they learn the port only once it is published.
        store = TCPStore(rendezvous_address(placement), 0, placement.num_tasks, is_master=True, timeout=timeout,
                         wait_for_workers=False)
        addr = publish_address(placement, cell_dir, store.port)
    else:
        addr, port = wait_for_address(placement, cell_dir)
        store = TCPStore(addr, port, placement.num_tasks, is_master=False, timeout=timeout)
    interface = interface_towards(addr)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)  # Gloo and NCCL bind to the route between the nodes
    os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
    return store


def join(placement: TaskPlacement, cell_dir: Path) -> object | None:
    """Set this task's Horovod environment; returns the server on rank 0 (keep it alive)."""
    server = start_server(placement, cell_dir) if placement.rank == 0 else None
    addr, port = wait_for_address(placement, cell_dir)
    os.environ.update(slot_environment(placement))
    os.environ.update(rendezvous_environment(addr, port, interface_towards(addr)))
    return server
