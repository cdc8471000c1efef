"""after_commit: work that runs only once the transaction has committed."""

from __future__ import annotations

import logging

import pytest
import redis
import transaction

from pyramid_transient.transactions import SORT_KEY, after_commit


@pytest.fixture
def tm() -> transaction.TransactionManager:
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    return manager


def test_work_runs_after_commit(tm: transaction.TransactionManager) -> None:
    done: list[str] = []
    after_commit("a", lambda: done.append("a"), transaction_manager=tm)
    assert done == []
    tm.commit()
    assert done == ["a"]


def test_abort_drops_the_work(tm: transaction.TransactionManager) -> None:
    done: list[str] = []
    after_commit("a", lambda: done.append("a"), transaction_manager=tm)
    tm.abort()
    tm.begin()
    tm.commit()
    assert done == []


def test_a_rolled_back_savepoint_drops_only_its_own_work(
    tm: transaction.TransactionManager,
) -> None:
    done: list[str] = []
    after_commit("before", lambda: done.append("before"), transaction_manager=tm)
    savepoint = tm.savepoint()
    after_commit("inside", lambda: done.append("inside"), transaction_manager=tm)
    savepoint.rollback()
    after_commit("after", lambda: done.append("after"), transaction_manager=tm)
    tm.commit()
    assert done == ["before", "after"]


def test_one_data_manager_per_transaction(tm: transaction.TransactionManager) -> None:
    first = after_commit("a", lambda: None, transaction_manager=tm)
    second = after_commit("b", lambda: None, transaction_manager=tm)
    assert first is second and len(first.work) == 2


def test_a_failure_after_commit_is_logged_not_raised(
    tm: transaction.TransactionManager, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[str] = []

    def boom() -> None:
        raise RuntimeError("nope")

    after_commit("the boom", boom, transaction_manager=tm)
    after_commit("the next", lambda: done.append("next"), transaction_manager=tm)
    with caplog.at_level(logging.ERROR, "pyramid_transient.transactions"):
        tm.commit()
    assert done == ["next"]
    assert "the boom failed after the transaction committed" in caplog.text


def test_a_connection_error_is_not_retried_but_logged_and_announced(
    tm: transaction.TransactionManager, caplog: pytest.LogCaptureFixture
) -> None:
    # The reply may have been lost after Redis ran the action: a second send could apply
    # it twice, so it is reported instead.
    from pyramid import testing as pyramid_testing

    from pyramid_transient.transactions import AfterCommitFailed

    calls: list[int] = []
    announced: list[AfterCommitFailed] = []

    def flaky() -> None:
        calls.append(1)
        raise redis.ConnectionError("dropped")

    config = pyramid_testing.setUp()
    try:
        config.add_subscriber(announced.append, AfterCommitFailed)
        after_commit("the flaky save", flaky, transaction_manager=tm)
        with caplog.at_level(logging.ERROR, "pyramid_transient.transactions"):
            tm.commit()
    finally:
        pyramid_testing.tearDown()
    assert len(calls) == 1
    assert "the flaky save failed after the transaction committed" in caplog.text
    assert [(e.what, type(e.error)) for e in announced] == [
        ("the flaky save", redis.ConnectionError)
    ]


def test_runs_after_resources_that_sort_before_it(tm: transaction.TransactionManager) -> None:
    order: list[str] = []

    class SQLResource:
        def abort(self, txn: object) -> None: ...
        def tpc_begin(self, txn: object) -> None: ...
        def commit(self, txn: object) -> None: ...
        def tpc_vote(self, txn: object) -> None: ...
        def tpc_abort(self, txn: object) -> None: ...
        def tpc_finish(self, txn: object) -> None:
            order.append("sql")

        def sortKey(self) -> str:
            return "~sqlalchemy:1"

    after_commit("ours", lambda: order.append("ours"), transaction_manager=tm)
    tm.get().join(SQLResource())
    tm.commit()
    assert order == ["sql", "ours"]
    assert SORT_KEY > "~sqlalchemy:"


def test_default_is_the_threads_transaction_manager() -> None:
    done: list[str] = []
    with transaction.manager:
        after_commit("a", lambda: done.append("a"))
    assert done == ["a"]


def test_after_commit_work_survives_an_earlier_savepoint_rollback() -> None:
    import transaction

    from pyramid_transient.transactions import after_commit

    tm = transaction.TransactionManager(explicit=False)
    ran: list[str] = []
    tm.begin()
    savepoint = tm.savepoint()  # e.g. around a block that may hit an IntegrityError
    after_commit("inside", lambda: ran.append("inside"), transaction_manager=tm)
    savepoint.rollback()  # drops "inside" and un-joins our data manager
    after_commit("after", lambda: ran.append("after"), transaction_manager=tm)
    tm.commit()
    assert ran == ["after"]
