"""The HOROVOD_* environment each task derives from its submitit placement."""

from __future__ import annotations

import pytest

from jobs.train.rendezvous import TaskPlacement, host_plan, interface_towards, slot_environment


def placements(num_tasks: int, hostnames: tuple[str, ...]) -> list[TaskPlacement]:
    per_node = num_tasks // len(hostnames)
    return [TaskPlacement(rank=r, local_rank=r % per_node, node=r // per_node, num_tasks=num_tasks,
                          hostnames=hostnames, job_id="42", attempt=0) for r in range(num_tasks)]


def test_one_node_two_workers():
    envs = [slot_environment(p) for p in placements(2, ("vm",))]
    assert [e["HOROVOD_RANK"] for e in envs] == ["0", "1"]
    assert [e["HOROVOD_LOCAL_RANK"] for e in envs] == ["0", "1"]
    assert {e["HOROVOD_SIZE"] for e in envs} == {"2"}
    assert {e["HOROVOD_LOCAL_SIZE"] for e in envs} == {"2"}
    assert {(e["HOROVOD_CROSS_RANK"], e["HOROVOD_CROSS_SIZE"], e["HOROVOD_HOSTNAME"]) for e in envs} == {("0", "1", "vm")}


def test_two_nodes_four_workers():
    envs = [slot_environment(p) for p in placements(4, ("node1", "node2"))]
    assert [e["HOROVOD_HOSTNAME"] for e in envs] == ["node1", "node1", "node2", "node2"]
    assert [e["HOROVOD_LOCAL_RANK"] for e in envs] == ["0", "1", "0", "1"]
    assert [e["HOROVOD_CROSS_RANK"] for e in envs] == ["0", "0", "1", "1"]
    assert {(e["HOROVOD_SIZE"], e["HOROVOD_LOCAL_SIZE"], e["HOROVOD_CROSS_SIZE"]) for e in envs} == {("4", "2", "2")}


@pytest.mark.parametrize("num_tasks, hostnames", [(2, ("vm",)), (4, ("node1", "node2")), (6, ("a", "b", "c"))])
def test_rank_zero_plan_matches_what_each_task_sets(num_tasks, hostnames):
    """Rank 0 gives Horovod's rendezvous server the slot plan; every task must agree with it."""
    plan = host_plan(placements(num_tasks, hostnames)[0])
    for placement, slot in zip(placements(num_tasks, hostnames), plan, strict=True):
        env = slot_environment(placement)
        assert (slot.hostname, slot.rank, slot.local_rank, slot.cross_rank) == (
            env["HOROVOD_HOSTNAME"], int(env["HOROVOD_RANK"]), int(env["HOROVOD_LOCAL_RANK"]),
            int(env["HOROVOD_CROSS_RANK"]))
        assert (slot.size, slot.local_size, slot.cross_size) == (
            num_tasks, int(env["HOROVOD_LOCAL_SIZE"]), int(env["HOROVOD_CROSS_SIZE"]))


def test_cyclic_task_distribution_is_refused():
    cyclic = TaskPlacement(rank=1, local_rank=0, node=1, num_tasks=4, hostnames=("n1", "n2"), job_id="1", attempt=0)
    with pytest.raises(ValueError, match="distribution=block"):
        slot_environment(cyclic)


def test_uneven_nodes_are_refused():
    uneven = TaskPlacement(rank=0, local_rank=0, node=0, num_tasks=3, hostnames=("n1", "n2"), job_id="1", attempt=0)
    with pytest.raises(ValueError, match="same number of tasks on every node"):
        slot_environment(uneven)


def test_loopback_rendezvous_uses_the_loopback_interface():
    assert interface_towards("127.0.0.1") == "lo"
