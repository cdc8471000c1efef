"""Tree locks of the store: exclusion, re-entry, expiry, fencing, waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import LockNotOwned, LockTimeout
from pyramid_transient.store import Lock, Proxy, current_owner, root, section


@pytest.fixture
def client(transient_manager: RedisManager) -> Any:
    return transient_manager.get("store")


def other_owner(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in another thread (another owner); return its result or its exception."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except Exception as exc:
            box.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return box[0]


def lock(client: Any, path: str, **kwargs: Any) -> Lock:
    return Lock(client, path, **kwargs)


def try_lock(client: Any, path: str) -> Any:
    """Another owner's non-blocking attempt: the token, or the LockTimeout."""

    def attempt() -> Any:
        other = lock(client, path)
        token = other.acquire(blocking=False)
        other.release()
        return token

    return other_owner(attempt)


# ---------------------------------------------------------------------- exclusion


def test_other_owner_cannot_take_the_same_path(client: Any) -> None:
    with lock(client, "a.b"):
        assert isinstance(try_lock(client, "a.b"), LockTimeout)


def test_other_owner_cannot_take_a_descendant(client: Any) -> None:
    with lock(client, "a.b"):
        assert isinstance(try_lock(client, "a.b.c"), LockTimeout)


def test_other_owner_cannot_take_an_ancestor(client: Any) -> None:
    with lock(client, "a.b"):
        assert isinstance(try_lock(client, "a"), LockTimeout)


@pytest.mark.parametrize("sibling", ["a.c", "a.bc", "a.b-", "other"])
def test_other_owner_can_take_a_sibling(client: Any, sibling: str) -> None:
    with lock(client, "a.b"):
        assert isinstance(try_lock(client, sibling), int)


def test_lock_timeout_names_the_path(client: Any) -> None:
    with lock(client, "a.b"):
        error = try_lock(client, "a.b")
    assert error.lock_name == "a.b"
    assert "'a.b'" in str(error)


def test_after_release_another_owner_can_take_it(client: Any) -> None:
    first = lock(client, "a")
    first.acquire()
    first.release()
    assert isinstance(try_lock(client, "a.b"), int)


# ---------------------------------------------------------------------- re-entry


def test_same_owner_reenters_and_must_release_as_often(client: Any) -> None:
    held = lock(client, "a")
    held.acquire()
    held.acquire()
    held.release()
    assert isinstance(try_lock(client, "a"), LockTimeout)
    held.release()
    assert isinstance(try_lock(client, "a"), int)


def test_same_owner_can_lock_below_its_own_lock(client: Any) -> None:
    with section("a", redis=client) as outer, outer.get("b.c") as inner:
        assert inner.owns_lock()


def test_owner_tokens_are_random_per_thread() -> None:
    mine = current_owner()
    theirs = other_owner(current_owner)
    assert mine != theirs
    assert len(mine) == 32
    assert str(threading.get_ident()) not in mine


# ---------------------------------------------------------------------- release


def test_release_by_a_non_owner_raises_and_frees_nothing(client: Any) -> None:
    held = lock(client, "a")
    held.acquire()
    error = other_owner(lambda: lock(client, "a").release())
    assert isinstance(error, LockNotOwned)
    assert isinstance(try_lock(client, "a"), LockTimeout)
    held.release()


def test_release_without_acquire_raises_lock_not_owned(client: Any) -> None:
    with pytest.raises(LockNotOwned, match="'a'"):
        lock(client, "a").release()


def test_lock_not_owned_is_a_value_error(client: Any) -> None:
    with pytest.raises(ValueError):
        lock(client, "a").release()


# ---------------------------------------------------------------------- expiry


def test_lock_expires_when_its_holder_dies(client: Any) -> None:
    lock(client, "a", timeout=0.05).acquire()  # never released: the holder "died"
    time.sleep(0.08)
    assert isinstance(try_lock(client, "a"), int)


def test_extend_keeps_the_lock_past_its_expiry(client: Any) -> None:
    held = lock(client, "a", timeout=0.1)
    held.acquire()
    time.sleep(0.06)
    held.extend()
    time.sleep(0.06)
    assert held.owned()
    held.release()


def test_extend_by_additional_time(client: Any) -> None:
    held = lock(client, "a", timeout=0.05)
    held.acquire()
    held.extend(10)
    time.sleep(0.08)
    assert held.owned()
    held.release()


def test_holder_can_tell_it_lost_the_lock(client: Any) -> None:
    held = lock(client, "a", timeout=0.05)
    held.acquire()
    assert held.owned()
    time.sleep(0.08)
    assert not held.owned()


def test_extending_a_lost_lock_raises_lock_not_owned(client: Any) -> None:
    held = lock(client, "a", timeout=0.05)
    held.acquire()
    time.sleep(0.08)
    with pytest.raises(LockNotOwned):
        held.extend()


def test_releasing_an_expired_lock_raises_lock_not_owned(client: Any) -> None:
    held = lock(client, "a", timeout=0.05)
    held.acquire()
    time.sleep(0.08)
    with pytest.raises(LockNotOwned):
        held.release()


# ---------------------------------------------------------------------- fencing


def test_each_acquisition_returns_a_greater_fencing_token(client: Any) -> None:
    tokens = []
    for _ in range(3):
        held = lock(client, "a.b")
        tokens.append(held.acquire())
        held.release()
    tokens.append(try_lock(client, "a.b"))
    assert tokens == sorted(set(tokens))
    assert len(tokens) == 4


def test_fencing_tokens_increase_after_an_expired_hold(client: Any) -> None:
    first = lock(client, "a", timeout=0.05).acquire()
    time.sleep(0.08)
    second = try_lock(client, "a")
    assert second > first


def test_reentry_returns_the_token_of_the_current_hold(client: Any) -> None:
    held = lock(client, "a")
    token = held.acquire()
    assert held.acquire() == token
    assert held.token == token
    held.release()
    held.release()
    assert held.token is None


def test_write_under_a_lost_lock_is_refused(client: Any) -> None:
    sect = section("s", redis=client, timeout=0.05)
    sect.set("doc", {"v": 1})
    doc = sect.get("doc")
    doc.acquire()
    time.sleep(0.08)
    assert isinstance(try_lock(client, "s.doc"), int)  # someone else took it meanwhile
    with pytest.raises(LockNotOwned):
        doc.set("v", 2)
    with pytest.raises(LockNotOwned):
        doc.get("v").add(1)
    assert sect.get("doc").val() == {"v": 1}


def test_write_under_a_held_lock_goes_through(client: Any) -> None:
    doc = section("s", redis=client).get("doc")
    with doc:
        doc.set("v", 2)
        doc.get("n").add(1)
    assert doc.val() == {"v": 2, "n": 1}


# ---------------------------------------------------------------------- waiting


def test_acquire_past_the_timeout_raises_lock_timeout(client: Any) -> None:
    with lock(client, "a"):
        error = other_owner(lambda: lock(client, "a", blocking_timeout=0.05).acquire())
    assert isinstance(error, LockTimeout)


def test_waiter_gets_the_lock_once_it_is_released(client: Any) -> None:
    taken = threading.Event()

    def hold_briefly() -> None:
        with lock(client, "a"):
            taken.set()
            time.sleep(0.05)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    taken.wait(5)
    try:
        token = lock(client, "a", blocking_timeout=5).acquire()
    finally:
        holder.join()
    assert isinstance(token, int)


def test_waiting_blocks_between_attempts_instead_of_spinning(
    client: Any, round_trips: Any
) -> None:
    with lock(client, "a"), round_trips() as rt:
        error = other_owner(lambda: lock(client, "a", blocking_timeout=0.3).acquire())
    assert isinstance(error, LockTimeout)
    attempts = rt.commands.count("EVALSHA")
    assert 2 <= attempts < 30
    assert rt.commands.count("BLPOP") == attempts - 1


def test_release_leaves_a_short_lived_wake_up_for_waiters(client: Any) -> None:
    held = lock(client, "a.b")
    held.acquire()
    held.release()
    assert client.lrange("store:{a}:released", 0, -1) == [b"1"]
    assert 0 < client.pttl("store:{a}:released") <= 1000


# ---------------------------------------------------------------------- proxy glue


def test_is_locked_sees_locks_on_ancestors_and_descendants(client: Any) -> None:
    sect = section("s", redis=client)
    assert not sect.get("a.b").is_locked()
    with sect.get("a"):
        assert other_owner(lambda: section("s", redis=client).get("a.b").is_locked())
    with sect.get("a.b.c"):
        assert other_owner(lambda: section("s", redis=client).get("a").is_locked())


def test_the_root_cannot_be_locked(client: Any) -> None:
    with pytest.raises(ValueError, match="root"):
        root(redis=client).acquire()


def test_proxy_lock_round_trips(client: Any, round_trips: Any) -> None:
    doc: Proxy = section("s", redis=client).get("doc")
    doc.acquire()
    doc.release()
    with round_trips() as rt:
        doc.acquire()
    assert rt.count == 1
    with round_trips() as rt:
        doc.release()
    assert rt.count == 1


def test_lock_on_a_manager_uses_its_prefix(transient_manager: RedisManager, client: Any) -> None:
    with section("s", redis=transient_manager).get("doc"):
        key = transient_manager.keyspace("store").tagged("s", "locks")
        assert client.hkeys(key) == [b"doc."]


def test_child_made_before_the_lock_is_taken_is_guarded_too(client: Any) -> None:
    doc = section("s", redis=client, timeout=0.05).get("doc")
    value = doc.get("v")
    doc.acquire()
    time.sleep(0.08)
    with pytest.raises(LockNotOwned):
        value.add(1)
    assert not value.exists()


def test_extend_with_replace_ttl_sets_the_time_left(client: Any) -> None:
    held = lock(client, "a", timeout=10)
    held.acquire()
    held.extend(0.05, replace_ttl=True)
    time.sleep(0.08)
    assert not held.owned()


def test_memory_backend_lock_excludes_and_times_out(transient_memory: RedisManager) -> None:
    held = section("s", redis=transient_memory).get("a")
    with held:
        error = other_owner(
            lambda: section("s", redis=transient_memory, blocking_timeout=0.05).acquire()
        )
    assert isinstance(error, LockTimeout)


def test_threads_sharing_a_proxy_share_its_lock_object(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module-level proxy used by many threads: the Lock made at first use must be one
    # object, or a thread's hold is tracked on a Lock the proxy no longer uses and its
    # writes go out without the lost-lock check.
    shared = section("s", redis=client).get("doc")
    from pyramid_transient.store import _proxy as proxy_module

    def slow_lock(*args: Any, **kwargs: Any) -> Lock:
        time.sleep(0.05)  # widen the window between "no lock yet" and "lock set"
        return Lock(*args, **kwargs)

    monkeypatch.setattr(proxy_module, "Lock", slow_lock)
    seen: list[Lock] = []
    threads = [threading.Thread(target=lambda: seen.append(shared.lock)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(seen) == 2
    assert seen[0] is seen[1] is shared.lock


def test_children_from_iter_children_carry_the_parents_lock(client: Any) -> None:
    sect = section("s", redis=client, timeout=0.05)
    sect.set("doc", {"a": 1, "b": 2})
    doc = sect.get("doc")
    doc.acquire()
    time.sleep(0.08)  # our lock expired ...

    def take_and_keep() -> int:
        other = Lock(client, "s.doc", timeout=30)
        return other.acquire(blocking=False)  # ... and another owner holds it now

    assert isinstance(other_owner(take_and_keep), int)
    child = next(iter(doc.iter_children()))
    assert child.key() == "s.doc.a"
    # A proxy got from the locked one: its write must be refused, as doc.get("a")'s is.
    with pytest.raises(LockNotOwned):
        doc.get("a").add(1)
    with pytest.raises(LockNotOwned):
        child.add(1)
    assert sect.get("doc").val() == {"a": 1, "b": 2}


# ---------------------------------------------------------------------- vocabulary


@pytest.mark.parametrize(
    ("old", "new"),
    [("lock_expire_timeout", "timeout"), ("lock_acquire_timeout", "blocking_timeout")],
)
def test_proxy_old_timing_names_warn_and_still_apply(client: Any, old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated.*use {new}="):
        proxy = section("s", redis=client, **{old: 3})
    assert getattr(proxy.lock, new) == 3


@pytest.mark.parametrize(
    ("old", "new"), [("expire_timeout", "timeout"), ("acquire_timeout", "blocking_timeout")]
)
def test_lock_old_timing_names_warn_and_still_apply(client: Any, old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated.*use {new}="):
        held = Lock(client, "a", **{old: 3})
    assert getattr(held, new) == 3
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated"):
        assert getattr(held, old) == 3


def test_both_names_of_one_argument_are_refused(client: Any) -> None:
    with pytest.raises(TypeError, match="both timeout= and its deprecated name expire_timeout="):
        Lock(client, "a", timeout=1, expire_timeout=2)


@pytest.mark.parametrize("via", ["proxy", "lock"])
def test_acquire_timeout_keyword_is_the_old_wait_and_warns(client: Any, via: str) -> None:
    with lock(client, "a"):

        def wait_the_old_way() -> Any:
            other: Any = section("a", redis=client, timeout=60)
            if via == "lock":
                other = other.lock
            start = time.monotonic()
            with pytest.warns(DeprecationWarning, match="use blocking_timeout="):
                try:
                    other.acquire(timeout=0.2)  # the old meaning: how long to wait
                except LockTimeout as exc:
                    return exc, time.monotonic() - start
            return None, 0.0

        error, waited = other_owner(wait_the_old_way)
    assert isinstance(error, LockTimeout)
    assert 0.15 < waited < 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": -1}, "timeout must be a positive"),
        ({"timeout": 10**11}, "up to"),
        ({"blocking_timeout": -0.1}, "blocking_timeout must be 0 or more"),
        ({"sleep": 0}, "sleep must be a positive"),
    ],
)
def test_lock_timing_out_of_range_is_refused(
    client: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Lock(client, "a", **kwargs)


def test_blocking_timeout_zero_makes_one_attempt(client: Any) -> None:
    with lock(client, "a"):
        error = other_owner(lambda: lock(client, "a", blocking_timeout=0).acquire())
    assert isinstance(error, LockTimeout)


def test_request_path_defaults_fail_fast_behind_an_orphaned_lock(
    transient_manager: RedisManager,
) -> None:
    # A holder that never releases (its release was lost to a stall): with the default
    # timing, the next request waits about the socket timeout, not 10 s.
    orphan = section("s", redis=transient_manager).get("doc").lock
    assert (orphan.timeout, orphan.blocking_timeout) == (5.0, 0.5)
    other_owner(orphan.acquire)  # taken by a thread that is gone
    start = time.monotonic()
    with pytest.raises(LockTimeout):
        section("s", redis=transient_manager).get("doc").acquire()
    assert 0.45 < time.monotonic() - start < 2
    key = transient_manager.keyspace("store").tagged("s", "locks")
    record = transient_manager.get("store").hget(key, "doc.").split()
    # the orphan frees itself within the default timeout
    seconds, micros = transient_manager.get("store").time()
    server_ms = int(seconds) * 1000 + int(micros) // 1000
    assert int(record[2]) - server_ms <= 5000
