"""The import chunk's state machine: its table, and the journal driving it through every
event order, crash point and lost answer (a hypothesis state machine)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from bulkops.engine.chunks import (
    FLAGS_TWICE,
    TRANSITIONS,
    ChunkEvent,
    ChunkState,
    Reconciled,
    Step,
    next_chunk_state,
    next_step,
    reconcile,
)
from bulkops.engine.journal import ChunkRecord, Journal, OutcomeRecord
from bulkops.engine.ledger import count_outcomes
from bulkops.errors import StateError

# -- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "event"), list(itertools.product(ChunkState, ChunkEvent)))
def test_every_pair_is_in_the_table_or_refused(state: ChunkState, event: ChunkEvent) -> None:
    """next_chunk_state answers from the table, and refuses every pair it lacks."""
    if (state, event) in TRANSITIONS:
        assert next_chunk_state(state, event) is TRANSITIONS[state, event]
    else:
        with pytest.raises(StateError, match=f"{event}"):
            next_chunk_state(state, event)


def _reachable(start: ChunkState) -> set[ChunkState]:
    seen = {start}
    frontier = [start]
    while frontier:
        current = frontier.pop()
        for (state, _event), target in TRANSITIONS.items():
            if state is current and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_done_is_final_and_reachable_from_every_state() -> None:
    """Nothing follows DONE; every state can still end in DONE (no chunk is stuck)."""
    assert not [pair for pair in TRANSITIONS if pair[0] is ChunkState.DONE]
    for state in ChunkState:
        assert ChunkState.DONE in _reachable(state), state
    assert _reachable(ChunkState.PLANNED) == set(ChunkState)


def test_only_reconciliation_sends_a_chunk_again() -> None:
    """The only ways back to PLANNED leave UNKNOWN; every way into POSTED names an activity."""
    back = {event for (_s, event), target in TRANSITIONS.items() if target is ChunkState.PLANNED}
    assert back == {ChunkEvent.ABSENT, ChunkEvent.AMBIGUOUS}
    assert all(s is ChunkState.UNKNOWN for (s, e) in TRANSITIONS if e in back)
    into_posted = {e for (_s, e), t in TRANSITIONS.items() if t is ChunkState.POSTED}
    assert into_posted == {ChunkEvent.ANSWER, ChunkEvent.ADOPT}
    assert {ChunkEvent.AMBIGUOUS} == FLAGS_TWICE


def test_every_state_has_a_step() -> None:
    """The import loop knows what to do in every state."""
    assert {next_step(state) for state in ChunkState} == set(Step)
    assert next_step(ChunkState.POSTING) is Step.LOSE  # a POST a dead process left


def test_a_verdict_adopts_only_a_candidate_that_fits_nobody_else() -> None:
    """One candidate fitting only this chunk is adopted; otherwise nothing is."""
    assert reconcile([], {}) == Reconciled(ChunkEvent.ABSENT)
    assert reconcile([], {}, suspected=True).event is ChunkEvent.AMBIGUOUS
    assert reconcile(["a"], {"a": []}) == Reconciled(ChunkEvent.ADOPT, "a")
    shared = reconcile(["a"], {"a": [3]})
    assert shared == Reconciled(
        ChunkEvent.AMBIGUOUS, suspects=frozenset({3}), blocked=frozenset({"a"})
    )
    two = reconcile(["a", "b"], {"a": [], "b": [5]})
    assert (two.event, two.suspects, two.blocked) == (
        ChunkEvent.AMBIGUOUS,
        frozenset({5}),
        frozenset({"a", "b"}),
    )


def test_an_owner_already_reconciled_is_flagged_not_suspected() -> None:
    """A candidate a reconciled chunk's lost POST may have created late is not adopted; that
    chunk cannot be SUSPECTed any more, so it is flagged as maybe applied twice instead."""
    verdict = reconcile(["a"], {"a": [1, 2]}, unanswered={2})
    assert verdict == Reconciled(
        ChunkEvent.AMBIGUOUS,
        suspects=frozenset({2}),
        blocked=frozenset({"a"}),
        twice=frozenset({1}),
    )
    assert reconcile(["a"], {"a": []}, unanswered=set()) == Reconciled(ChunkEvent.ADOPT, "a")


def test_the_journal_remembers_lost_posts_until_one_is_adopted(tmp_path: Path) -> None:
    """Every lost POST stays a possible owner; ADOPT settles a chunk's only lost POST, never
    one of several (which of them created the activity is unknown)."""
    journal = Journal(tmp_path, create=True)
    journal.plan(_record(0, 3))
    journal.plan(_record(1, 2))
    journal.apply(0, ChunkEvent.SEND, now=1.0)
    journal.apply(0, ChunkEvent.LOSE)
    journal.reconciled(0, Reconciled(ChunkEvent.ABSENT))
    journal.apply(0, ChunkEvent.SEND, now=2.0)
    journal.apply(0, ChunkEvent.LOSE)
    journal.apply(1, ChunkEvent.SEND, now=3.0)
    journal.apply(1, ChunkEvent.LOSE)
    assert journal.lost_posts() == [(0, 1.0, 3), (0, 2.0, 3), (1, 3.0, 2)]
    journal.reconciled(0, Reconciled(ChunkEvent.ADOPT, "a0"))
    journal.reconciled(1, Reconciled(ChunkEvent.ADOPT, "a1"))
    assert journal.lost_posts() == [(0, 1.0, 3), (0, 2.0, 3)]
    journal.close()
    journal = Journal(tmp_path, create=False)  # it survives the process
    journal.plan(_record(2, 1))
    journal.apply(2, ChunkEvent.SEND, now=4.0)
    journal.apply(2, ChunkEvent.LOSE)
    journal.reconciled(2, reconcile(["x"], {"x": [0]}, unanswered=set()))
    flagged = journal.chunk(0)
    assert flagged is not None
    assert (flagged.state, flagged.maybe_twice, flagged.suspected) == (
        ChunkState.POSTED,
        True,
        False,
    )
    assert "x" in journal.known_activity_ids()
    journal.close()


def _record(seq: int, rows: int) -> ChunkRecord:
    lines = array("Q", range(10 * seq + 2, 10 * seq + 2 + rows))
    return ChunkRecord(
        seq=seq,
        kind="add",
        rows=rows,
        first_line=lines[0],
        last_line=lines[-1],
        start_offset=0,
        end_offset=1,
        digest=f"d{seq}",
        body_bytes=10,
        lines=lines,
        after=None,
    )


def test_the_journal_refuses_an_illegal_event_and_keeps_the_state(tmp_path: Path) -> None:
    """An event the table lacks changes nothing; ANSWER needs an activity id."""
    journal = Journal(tmp_path, create=True)
    journal.plan(_record(0, 3))
    with pytest.raises(StateError):
        journal.apply(0, ChunkEvent.ANSWER, activity_id="a1")
    with pytest.raises(StateError):
        journal.done(
            0,
            status="COMPLETE",
            transaction_count=3,
            failures=[],
            run_start=None,
            run_finish=None,
            insert_time=None,
        )
    journal.apply(0, ChunkEvent.SEND, now=1.0)
    with pytest.raises(StateError, match="needs activity id"):
        journal.apply(0, ChunkEvent.ANSWER)
    chunk = journal.chunk(0)
    assert chunk is not None
    assert (chunk.state, chunk.posts, chunk.post_started) == (ChunkState.POSTING, 1, 1.0)
    journal.close()


def test_a_journal_of_the_previous_format_is_refused_with_a_message(tmp_path: Path) -> None:
    """A run directory written by the previous version is not misread."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.commit()
    db.close()
    from bulkops.errors import ConfigError

    with pytest.raises(ConfigError, match="another version of bulkops"):
        Journal(tmp_path, create=False)


# -- the machine under every order, crash and lost answer --------------------------------------

CHUNKS = 3
ROWS = (3, 2, 4)
#: Where each example's journal lives: a RAM disk when there is one. The machine opens,
#: crashes and reopens hundreds of journals; on a real disk each costs fsyncs that a busy
#: machine makes slow, and what is checked here is the logic, not the disk.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class ChunkLives(RuleBasedStateMachine):
    """A model server and a real journal, driven the way ``engine/imports.py`` drives them.

    The server creates an activity when a POST reaches it (at most once per POST); an
    answer may come back or be lost; the process may die at any point (everything in
    memory is lost, the journal survives and the next run applies LOSE to POSTING chunks).
    A POST whose answer was lost before the server created its activity may still create
    it later, after any number of reconciliations (the server finishes a request whose
    client is gone). Reconciliation sees every activity no chunk owns or blocks; the true
    one always fits its chunk, and any other chunk with a POST in flight or a lost POST the
    journal remembers may fit a candidate too (same size, same moment): hypothesis decides.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="chunks-", dir=SCRATCH))
        self.journal = Journal(self.dir, create=True)
        for seq in range(CHUNKS):
            self.journal.plan(_record(seq, ROWS[seq]))
        self.server: dict[str, int] = {}  # activity id -> the chunk whose body it carries
        self.flight: dict[int, str | None] = {}  # POSTs in flight -> activity created, if yet
        self.orphans: list[int] = []  # lost POSTs (by chunk) the server has not applied yet
        self.late: set[str] = set()  # activities an orphan created
        self.ids = itertools.count()
        self.clock = itertools.count(1)
        self.finished: dict[int, str] = {}

    def teardown(self) -> None:
        self.journal.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _state(self, seq: int) -> ChunkState:
        record = self.journal.chunk(seq)
        assert record is not None
        return record.state

    def _in(self, state: ChunkState) -> list[int]:
        return [seq for seq in range(CHUNKS) if self._state(seq) is state]

    @initialize()
    def start(self) -> None:
        pass

    # -- the POST ------------------------------------------------------------------------

    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        """A submitter POSTs a PLANNED chunk (SEND is journaled first)."""
        ready = [s for s in self._in(ChunkState.PLANNED) if s not in self.flight]
        if not ready:
            return
        seq = data.draw(st.sampled_from(ready))
        self.journal.apply(seq, ChunkEvent.SEND, now=float(next(self.clock)))
        self.flight[seq] = None

    @rule(data=st.data())
    def server_applies(self, data: st.DataObject) -> None:
        """A POST in flight reaches the server, which creates its activity."""
        waiting = [seq for seq, made in self.flight.items() if made is None]
        if not waiting:
            return
        seq = data.draw(st.sampled_from(waiting))
        activity = f"a{next(self.ids)}"
        self.server[activity] = seq
        self.flight[seq] = activity

    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        """The answer to a POST the server applied comes back: ANSWER."""
        answered = [seq for seq, made in self.flight.items() if made is not None]
        if not answered:
            return
        seq = data.draw(st.sampled_from(answered))
        activity = self.flight.pop(seq)
        assert activity is not None
        self.journal.apply(seq, ChunkEvent.ANSWER, activity_id=activity)

    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        """A POST's answer is lost, whether or not the server applied it: LOSE."""
        if not self.flight:
            return
        seq = data.draw(st.sampled_from(sorted(self.flight)))
        if self.flight.pop(seq) is None:
            self.orphans.append(seq)
        self.journal.apply(seq, ChunkEvent.LOSE)

    @rule(data=st.data())
    def orphan_arrives(self, data: st.DataObject) -> None:
        """A lost POST reaches the server after all and creates its activity, late."""
        if not self.orphans:
            return
        seq = self.orphans.pop(data.draw(st.integers(0, len(self.orphans) - 1)))
        activity = f"a{next(self.ids)}"
        self.server[activity] = seq
        self.late.add(activity)

    @rule()
    def crash(self) -> None:
        """The process dies; the next run finds POSTING chunks and LOSEs them."""
        self.orphans += [seq for seq, made in self.flight.items() if made is None]
        self.flight.clear()
        self.journal.close()
        self.journal = Journal(self.dir, create=False)
        for record in self.journal.chunks(ChunkState.POSTING):
            self.journal.apply(record.seq, ChunkEvent.LOSE)

    # -- reconciliation and the end of an activity ---------------------------------------

    def _unowned(self) -> list[str]:
        known = self.journal.known_activity_ids()
        return [a for a in self.server if a not in known]

    @rule(data=st.data())
    def reconcile_one(self, data: st.DataObject) -> None:
        """An UNKNOWN chunk is reconciled against what the server holds."""
        unknown = self._in(ChunkState.UNKNOWN)
        if not unknown:
            return
        seq = data.draw(st.sampled_from(unknown))
        unanswered = {
            s for s in range(CHUNKS) if self._state(s) in (ChunkState.POSTING, ChunkState.UNKNOWN)
        }
        possible = unanswered | {s for s, _started, _rows in self.journal.lost_posts()}

        def fits(chunk: int, activity: str) -> bool:
            if self.server[activity] == chunk:
                return True  # the true owner's window always holds its activity
            return data.draw(st.booleans(), label=f"{activity} also fits chunk {chunk}")

        fitting = [a for a in self._unowned() if fits(seq, a)]
        owners = {a: [o for o in sorted(possible - {seq}) if fits(o, a)] for a in fitting}
        record = self.journal.chunk(seq)
        assert record is not None
        verdict = reconcile(fitting, owners, suspected=record.suspected, unanswered=unanswered)
        self.journal.reconciled(seq, verdict)

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        """A POSTED chunk's activity finishes; some rows may fail on the server."""
        posted = self._in(ChunkState.POSTED)
        if not posted:
            return
        seq = data.draw(st.sampled_from(posted))
        record = self.journal.chunk(seq)
        assert record is not None
        failed = data.draw(st.sets(st.sampled_from(list(record.lines))), label="failed")
        self.journal.done(
            seq,
            status="COMPLETE",
            transaction_count=record.rows - len(failed),
            failures=[
                OutcomeRecord(line=line, kind="failed", reason="x", chunk=seq) for line in failed
            ],
            run_start=None,
            run_finish=None,
            insert_time=None,
        )

    # -- what must always hold -----------------------------------------------------------

    @invariant()
    def no_chunk_applied_twice_unless_flagged(self) -> None:
        # A late activity after its chunk was found ABSENT and sent again applies the chunk
        # twice unseen, unless a later reconciliation sees it (nothing can tell earlier).
        for seq in range(CHUNKS):
            applied = sum(
                1 for a, owner in self.server.items() if owner == seq and a not in self.late
            )
            record = self.journal.chunk(seq)
            assert record is not None
            assert applied <= 1 or record.maybe_twice, (seq, applied, record)

    @invariant()
    def a_chunk_names_only_its_own_activity(self) -> None:
        named: list[str] = []
        for record in self.journal.chunks():
            if record.state in (ChunkState.POSTED, ChunkState.DONE):
                assert record.activity_id is not None
                assert self.server[record.activity_id] == record.seq
                named.append(record.activity_id)
        assert len(named) == len(set(named))

    @rule()
    def run_to_the_end(self) -> None:
        """Resume with a healthy network and drive every chunk to DONE, as the engine does:
        no chunk is lost, and every row ends with exactly one outcome."""
        self.crash()
        for _ in range(8 * CHUNKS):
            for seq in range(CHUNKS):
                step = next_step(self._state(seq))
                if step is Step.SEND:
                    self.journal.apply(seq, ChunkEvent.SEND, now=float(next(self.clock)))
                    activity = f"a{next(self.ids)}"
                    self.server[activity] = seq
                    self.journal.apply(seq, ChunkEvent.ANSWER, activity_id=activity)
                elif step is Step.RECONCILE:
                    fitting = [a for a in self._unowned() if self.server[a] == seq]
                    record = self.journal.chunk(seq)
                    assert record is not None
                    verdict = reconcile(
                        fitting, {a: [] for a in fitting}, suspected=record.suspected
                    )
                    self.journal.reconciled(seq, verdict)
                elif step is Step.WAIT:
                    record = self.journal.chunk(seq)
                    assert record is not None
                    self.journal.done(
                        seq,
                        status="COMPLETE",
                        transaction_count=record.rows,
                        failures=[],
                        run_start=None,
                        run_finish=None,
                        insert_time=None,
                    )
        assert self._in(ChunkState.DONE) == list(range(CHUNKS))
        for seq in range(CHUNKS):
            assert seq in self.server.values()  # applied at least once: nothing lost
        counts = count_outcomes(self.journal, rows_read=sum(ROWS))
        assert counts.pending == 0
        assert counts.balanced
        assert counts.applied + counts.failed == sum(ROWS)


class _Draws:
    """Stands in for hypothesis' data object: hands out chosen values in order."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def draw(self, strategy: object, label: object = None) -> object:
        return self.values.pop(0)


def test_the_machine_refuses_a_late_activity_to_another_chunk() -> None:
    """The sequence the crash test hit, step by step: chunk 1's lost POST is found ABSENT,
    chunk 0's POST is lost, chunk 1's first POST then reaches the server; chunk 0 must not
    adopt that activity (it is sent again, both flagged)."""
    machine = ChunkLives()
    try:
        machine.send(_Draws(1))  # type: ignore[arg-type]
        machine.lose(_Draws(1))  # type: ignore[arg-type]
        machine.reconcile_one(_Draws(1))  # type: ignore[arg-type]
        assert machine._state(1) is ChunkState.PLANNED
        machine.send(_Draws(0))  # type: ignore[arg-type]
        machine.lose(_Draws(0))  # type: ignore[arg-type]
        machine.orphan_arrives(_Draws(0))  # type: ignore[arg-type]
        machine.reconcile_one(_Draws(0, True, True))  # type: ignore[arg-type]
        machine.a_chunk_names_only_its_own_activity()
        zero, one = machine.journal.chunk(0), machine.journal.chunk(1)
        assert zero is not None
        assert one is not None
        assert (zero.state, zero.maybe_twice, one.maybe_twice) == (ChunkState.PLANNED, True, True)
        machine.run_to_the_end()
    finally:
        machine.teardown()


ChunkLives.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_chunk_lives = ChunkLives.TestCase
