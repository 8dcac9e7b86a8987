"""The store against a plain model: a list of dicts, one per height.

Random commits, deletes, reopens, checkpoints, prunes and rollbacks (hypothesis state machine);
after every step the head root is the reference root of the model, and every retained height
reads, proves, roots and iterates (`iter_state`) exactly as the model says; dropped heights
raise HeightUnavailable.
"""

from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import example, given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from node.core import merkle
from node.store import HeightUnavailable, LevelDBBackend, MemoryBackend, VersionedStore

KEYS = [bytes([k]) for k in range(6)] + [b"k" * 256, b"\x00\xff"]
keys = st.sampled_from(KEYS)
values = st.binary(max_size=6)
write_sets = st.dictionaries(keys, st.none() | values, max_size=5)


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="perp-model-")
        self.memory = MemoryBackend()
        self.use_leveldb = True
        self.store = self._open()
        self.states: dict[int, dict[bytes, bytes]] = {}  # retained height -> state
        self.head = -1
        self.pins: dict[str, int] = {}
        self.counter = 0

    def _open(self) -> VersionedStore:
        backend = LevelDBBackend(self.tmp) if self.use_leveldb else self.memory
        return VersionedStore(backend)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(writes=write_sets)
    def commit(self, writes: dict[bytes, bytes | None]) -> None:
        state = dict(self.states.get(self.head, {}))
        for key, value in writes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        root = self.store.commit(writes)
        self.head += 1
        self.states[self.head] = state
        assert root == merkle.reference_root(state.items())

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        assert self.store.open_check in ("seal", "rehashed")  # "rehashed": an empty store

    @rule()
    def crash_and_reopen(self) -> None:
        """As after kill -9: the database closed without the store's close, so no seal; the
        open rebuilds the tree from the flat table."""
        self.store._closed = True
        self.store._db.close()
        self.store = self._open()
        assert self.store.open_check == "rehashed"

    @precondition(lambda self: self.head >= 0)
    @rule(pick=st.integers(min_value=0))
    def checkpoint(self, pick: int) -> None:
        retained = sorted(self.states)
        height = retained[pick % len(retained)]
        self.counter += 1
        name = f"cp-{self.counter}"
        self.store.checkpoint(name, height=height)
        self.pins[name] = height

    @precondition(lambda self: bool(self.pins))
    @rule(pick=st.integers(min_value=0))
    def delete_checkpoint(self, pick: int) -> None:
        name = sorted(self.pins)[pick % len(self.pins)]
        self.store.delete_checkpoint(name)
        del self.pins[name]

    @precondition(lambda self: self.head >= 0)
    @rule(before=st.integers(min_value=0, max_value=40))
    def prune(self, before: int) -> None:
        self.store.prune(before)
        before = min(before, self.head)
        pinned = set(self.pins.values())
        self.states = {h: s for h, s in self.states.items() if h >= before or h in pinned}

    @precondition(lambda self: self.head >= 0)
    @rule(pick=st.integers(min_value=0))
    def rollback(self, pick: int) -> None:
        retained = sorted(self.states)
        target = retained[pick % len(retained)]
        self.store.rollback_to(target)
        self.states = {h: s for h, s in self.states.items() if h <= target}
        self.pins = {n: h for n, h in self.pins.items() if h <= target}
        self.head = target

    @invariant()
    def matches_model(self) -> None:
        store = self.store
        assert store.height == self.head
        head_state = self.states.get(self.head, {})
        assert store.root() == merkle.reference_root(head_state.items())
        assert sorted(store.iter_prefix()) == sorted(head_state.items())
        assert store.retained_heights() == sorted(self.states)
        assert sorted((cp.name, cp.height) for cp in store.checkpoints()) == sorted(
            self.pins.items()
        )
        for height, state in self.states.items():
            root = store.root(height)
            assert root == merkle.reference_root(state.items())
            assert list(store.iter_state(height)) == sorted(state.items())
            for key in KEYS:
                assert store.get(key, height) == state.get(key)
                assert merkle.verify_proof(root, key, state.get(key), store.prove(key, height))
        for height in range(-1, self.head + 2):
            if height not in self.states:
                for read in (lambda h: store.get(KEYS[0], h), store.iter_state):
                    try:
                        read(height)
                    except HeightUnavailable:
                        pass
                    else:
                        raise AssertionError(f"height {height} should be unavailable")


StoreModel.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestStoreModelLevelDB = StoreModel.TestCase


class MemoryStoreModel(StoreModel):
    def __init__(self) -> None:
        super().__init__()
        self.use_leveldb = False
        self.store.close()
        self.store = self._open()


MemoryStoreModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)
TestStoreModelMemory = MemoryStoreModel.TestCase


@given(blocks=st.lists(write_sets, min_size=1, max_size=8), pick=st.integers(min_value=0))
# A key deleted at the last height must come back when that height is rolled away.
@example(blocks=[{b"k": b"v"}, {b"k": None}], pick=0)
@settings(max_examples=100, deadline=None)
def test_rollback_equals_replay_of_prefix(
    blocks: list[dict[bytes, bytes | None]], pick: int
) -> None:
    target = pick % len(blocks)
    store = VersionedStore(MemoryBackend())
    roots = [store.commit(ws) for ws in blocks]
    store.rollback_to(target)
    replayed = VersionedStore(MemoryBackend())
    for ws in blocks[: target + 1]:
        replayed.commit(ws)
    assert store.root() == replayed.root() == roots[target]
    assert list(store.iter_prefix()) == list(replayed.iter_prefix())
    for height in range(target + 1):
        assert store.root(height) == replayed.root(height)
        assert list(store.diff(0, height)) == list(replayed.diff(0, height))
    # the chain continues identically after the rollback
    assert store.commit({b"next": b"1"}) == replayed.commit({b"next": b"1"})


def test_rollback_over_a_merged_diff_removes_pruned_versions() -> None:
    """Found by the state machine: a version written at a pruned height, kept as the value of
    the next kept height, must go when that height is rolled back, or it reappears when the
    chain reuses the height."""
    store = VersionedStore(MemoryBackend())
    store.commit({})
    store.checkpoint("pin", height=0)
    store.commit({b"\x00": b""})
    store.commit({})
    store.prune(2)
    store.rollback_to(0)
    store.commit({})
    store.commit({})
    assert store.get(b"\x00", 1) is None and store.get(b"\x00", 2) is None
    store.verify_history()
