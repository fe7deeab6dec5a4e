"""Role exchange: schedules, and swaps that move references only and keep each learner's state."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.fakes import SCORES, BigramAgent, cfg, make_batch

from agents.rl import PPOLearner
from agents.rl.learner import Learner
from agents.roles import (
    OBSERVER,
    PIONEER,
    ROLES,
    NeverSwap,
    PeriodicSwap,
    RoleAssignment,
    SwapSchedule,
    make_schedule,
)


def test_periodic_swap_over_12_iterations():
    sched = PeriodicSwap(5)
    assert [i for i in range(12) if sched.should_swap(i)] == [4, 9]
    assert [i for i in range(12) if PeriodicSwap(1).should_swap(i)] == list(range(12))
    assert [i for i in range(12) if PeriodicSwap(3).should_swap(i)] == [2, 5, 8, 11]
    assert PeriodicSwap().period == 5
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            PeriodicSwap(bad)
    with pytest.raises(ValueError):
        sched.should_swap(-1)


def test_never_swap_never_swaps():
    assert not any(NeverSwap().should_swap(i) for i in range(1000))


def test_make_schedule():
    assert make_schedule(5) == PeriodicSwap(5)
    assert make_schedule("3") == PeriodicSwap(3)
    assert make_schedule("periodic") == PeriodicSwap(5)
    assert make_schedule("periodic", period=2) == PeriodicSwap(2)
    for never in (0, None, "never", "none", "NEVER"):
        assert make_schedule(never) == NeverSwap()
    s = PeriodicSwap(7)
    assert make_schedule(s) is s
    assert isinstance(s, SwapSchedule) and isinstance(NeverSwap(), SwapSchedule)
    with pytest.raises(ValueError):
        make_schedule("sometimes")
    with pytest.raises(TypeError):
        make_schedule(True)
    with pytest.raises(ValueError):
        make_schedule(-2)


def two_learners() -> tuple[PPOLearner, PPOLearner]:
    a = PPOLearner(BigramAgent(seed=0), cfg(use_score_scaling=True))
    b = PPOLearner(BigramAgent(seed=1), cfg(use_score_scaling=True, adap_kl_ctrl=False))
    a.update(make_batch(), SCORES)  # give both optimiser state, KL controller and moments
    b.update(make_batch(), SCORES + 1.0)
    return a, b


def test_role_assignment_construction():
    a, b = two_learners()
    r = RoleAssignment((a, b))
    assert r.pioneer is a and r.observer is b and r[PIONEER] is a and r[OBSERVER] is b
    r2 = RoleAssignment({OBSERVER: b, PIONEER: a})
    assert r2.pioneer is a and r2.observer is b and r2.learners == (a, b)
    assert r.items() == [(PIONEER, a), (OBSERVER, b)] and r.as_dict() == {PIONEER: a, OBSERVER: b}
    assert ROLES == ("pioneer_0", "observer_0")
    assert all(isinstance(x, Learner) for x in r.learners)
    with pytest.raises(ValueError):
        RoleAssignment((a, a))
    with pytest.raises(ValueError):
        RoleAssignment((a,))
    with pytest.raises(ValueError):
        RoleAssignment({"pioneer": a, "observer": b})
    with pytest.raises(KeyError):
        r["critic_0"]


def test_swap_moves_references_only_and_keeps_state():
    a, b = two_learners()
    r = RoleAssignment((a, b))

    def snapshot(learner):
        opt_state = [
            s for st in learner.optimizer.state.values() for s in st.values() if torch.is_tensor(s)
        ]
        return (
            learner.agent,
            learner.optimizer,
            opt_state,
            learner.kl_ctl,
            learner.running,
            learner.generator,
            list(learner.agent.trainable_parameters()),
            learner.kl_ctl.value,
            learner.running.state_dict(),
        )

    before = {id(x): snapshot(x) for x in (a, b)}
    values = {id(x): copy.deepcopy(x.state_dict()) for x in (a, b)}
    r.swap()
    assert r.pioneer is b and r.observer is a and r.num_swaps == 1
    assert r.index(PIONEER) == 1 and r.role_of(a) == OBSERVER and r.role_of(b) == PIONEER
    assert r.learners == (a, b)  # construction order never changes
    for x in (a, b):
        old, new = before[id(x)], snapshot(x)
        for o, n in zip(old[:7], new[:7], strict=True):
            if isinstance(o, list):
                assert len(o) == len(n) > 0 and all(p is q for p, q in zip(o, n, strict=True))
            else:
                assert o is n
        assert old[7] == new[7] and old[8] == new[8]
        # nothing changed value either
        st = x.state_dict()
        for k, v in values[id(x)]["optimizer"]["state"].items():
            for name, t in v.items():
                assert torch.equal(
                    torch.as_tensor(t), torch.as_tensor(st["optimizer"]["state"][k][name])
                )
    r.swap()
    assert r.pioneer is a and r.observer is b and r.num_swaps == 2


def test_schedule_drives_assignment_over_12_iterations():
    a, b = object(), object()
    r = RoleAssignment((a, b))
    sched = make_schedule(5)
    pioneers = []
    for it in range(12):
        pioneers.append("a" if r.pioneer is a else "b")
        r.maybe_swap(sched, it)
    assert "".join(pioneers) == "aaaaabbbbbaa" and r.num_swaps == 2
    r_never = RoleAssignment((a, b))
    assert not any(r_never.maybe_swap(NeverSwap(), it) for it in range(12))
    assert r_never.pioneer is a and r_never.num_swaps == 0


def test_role_assignment_state_dict_round_trip():
    a, b = object(), object()
    r = RoleAssignment((a, b))
    r.swap()
    r.swap()
    r.swap()
    state = r.state_dict()
    assert state == {"pioneer": 1, "observer": 0, "num_swaps": 3}
    r2 = RoleAssignment((a, b))
    r2.load_state_dict(state)
    assert r2.pioneer is b and r2.observer is a and r2.num_swaps == 3
    with pytest.raises(ValueError):
        r2.load_state_dict({"pioneer": 2})
    with pytest.raises(ValueError):
        r2.load_state_dict({"pioneer": 0, "observer": 0})


def test_each_learner_keeps_its_own_state_across_swaps():
    """Training through a swap equals training the two learners without any assignment."""
    a, b = two_learners()
    a_ref, b_ref = two_learners()
    r = RoleAssignment((a, b))
    batch_p, batch_o = make_batch(), make_batch().subset(range(4))
    for it in range(4):
        sp = r.pioneer.update(batch_p, SCORES)
        so = r.observer.update(batch_o, SCORES[:4])
        # the same updates, applied to untouched twins by hand-tracked role
        ref_p, ref_o = (a_ref, b_ref) if it < 2 else (b_ref, a_ref)
        assert sp == ref_p.update(batch_p, SCORES)
        assert so == ref_o.update(batch_o, SCORES[:4])
        r.maybe_swap(PeriodicSwap(2), it)
    assert r.num_swaps == 2 and r.pioneer is a
    assert a.kl_ctl.value == a_ref.kl_ctl.value and b.kl_ctl.value == b_ref.kl_ctl.value
