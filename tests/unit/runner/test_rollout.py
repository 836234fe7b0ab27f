"""Which replicas the local runner starts and stops (smartflow_devstack.runner.rollout)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from smartflow_devstack.runner.rollout import ReplicaView, RolloutStep, plan_rollout
from smartflow_devstack.runner.spec import DeploymentFacts

FACTS = DeploymentFacts(
    namespace="shop",
    name="shop-relay",
    uid="u",
    generation=1,
    replicas=2,
    template_hash="new",
    grace_seconds=30,
    min_ready_seconds=0,
    progress_deadline_seconds=600,
    strategy="RollingUpdate",
    max_surge=1,
    max_unavailable=0,
    wants_http_port=False,
)


def view(name: str, seq: int, *, current: bool = True, ready: bool = True) -> ReplicaView:
    return ReplicaView(name=name, seq=seq, current=current, ready=ready, available=ready)


def facts(replicas: int, strategy: Literal["RollingUpdate", "Recreate"] = "RollingUpdate") -> DeploymentFacts:
    return replace(FACTS, replicas=replicas, strategy=strategy)


class TestScaling:
    def test_starts_the_missing_replicas(self) -> None:
        assert plan_rollout(facts(3), [view("a", 1)]) == RolloutStep(start=2)

    def test_nothing_to_do_at_the_desired_count(self) -> None:
        assert plan_rollout(facts(2), [view("a", 1), view("b", 2)]) == RolloutStep()

    def test_scale_down_stops_unready_replicas_first_then_the_newest(self) -> None:
        replicas = [view("a", 1), view("b", 2), view("c", 3, ready=False), view("d", 4)]
        assert plan_rollout(facts(2), replicas) == RolloutStep(stop=("c", "d"))

    def test_zero_replicas_stops_everything(self) -> None:
        step = plan_rollout(facts(0), [view("a", 1), view("b", 2, current=False)])
        assert set(step.stop) == {"a", "b"}
        assert step.start == 0


class TestRollingUpdate:
    def test_surge_one_then_stop_an_old_replica_once_the_new_one_is_ready(self) -> None:
        old = [view("o1", 1, current=False), view("o2", 2, current=False)]
        assert plan_rollout(facts(2), old) == RolloutStep(start=1)
        starting = [*old, view("n1", 3, ready=False)]
        assert plan_rollout(facts(2), starting) == RolloutStep()  # keeps both old ones: none may go
        ready = [*old, view("n1", 3)]
        assert plan_rollout(facts(2), ready) == RolloutStep(stop=("o2",))
        halfway = [old[0], view("n1", 3)]
        assert plan_rollout(facts(2), halfway) == RolloutStep(start=1)
        done = [old[0], view("n1", 3), view("n2", 4)]
        assert plan_rollout(facts(2), done) == RolloutStep(stop=("o1",))

    def test_a_new_template_that_never_gets_ready_keeps_the_old_replicas(self) -> None:
        replicas = [view("o1", 1, current=False), view("n1", 2, ready=False)]
        assert plan_rollout(facts(1), replicas) == RolloutStep()

    def test_unready_old_replicas_go_at_once(self) -> None:
        replicas = [view("o1", 1, current=False, ready=False), view("o2", 2, current=False)]
        step = plan_rollout(facts(2), replicas)
        assert step.stop == ("o1",)
        assert step.start == 1

    def test_max_unavailable_lets_old_replicas_go_before_new_ones_are_ready(self) -> None:
        relaxed = replace(facts(2), max_surge=0, max_unavailable=1)
        old = [view("o1", 1, current=False), view("o2", 2, current=False)]
        assert plan_rollout(relaxed, old) == RolloutStep(stop=("o2",))


class TestRecreate:
    def test_stops_every_old_replica_before_starting_new_ones(self) -> None:
        old = [view("o1", 1, current=False), view("o2", 2, current=False)]
        assert plan_rollout(facts(2, "Recreate"), old) == RolloutStep(stop=("o1", "o2"))
        assert plan_rollout(facts(2, "Recreate"), [], old_terminating=2) == RolloutStep()
        assert plan_rollout(facts(2, "Recreate"), [], old_terminating=0) == RolloutStep(start=2)
