"""Differential tests: the same operations sent to daprd and to our server on the same kind of backend.

Random sequences (saves with and without ETags, first-write, gets, bulk gets, deletes, bulk deletes,
transactions, TTLs, queries; each over HTTP or gRPC) must give the same statuses, error codes and
values. Where daprd's store contradicts Dapr's documentation and we deliberately differ
(docs/state-api.md), the generator steers around the case and `test_deliberate_differences` asserts
the difference itself, on the backends concerned.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from differential import Op, Outcome, Server, pairs
from grpc_testing import serve

from conftest import serve_daprd
from fixtures.stores import BACKENDS, PLUGGABLE_BACKENDS, ComponentUnderTest, _component, _params

pytestmark = (
    pytest.mark.backends
)  # daprd is built with the database servers (testing/statestore_testing/daprd.py)


@pytest.fixture(params=_params(b for b in BACKENDS if b not in PLUGGABLE_BACKENDS))
def component(request: pytest.FixtureRequest) -> ComponentUnderTest:
    """Every backend but the pluggable component: daprd and ours would share its one instance of the
    Component name (tests/pluggable hold daprd and ours to that component)."""
    return _component(request)


KEYS = ("k0", "k1", "k2", "k3", "k4")
SEEDS = (1, 2, 3)
OPS_PER_SEQUENCE = 60


def _own_store(component: ComponentUnderTest, label: str) -> ComponentUnderTest:
    """The same kind of store, but not the same tables or file: each server keeps its own rows."""
    metadata = dict(component.metadata)
    suffix = uuid.uuid4().hex[:8]
    for name in ("tableName", "metadataTableName"):
        if name in metadata:
            metadata[name] = f"{metadata[name]}_{label}_{suffix}"
    if component.type == "state.sqlite":
        metadata["connectionString"] = metadata["connectionString"].replace(".db", f"-{label}.db")
    return ComponentUnderTest(component.backend, component.type, metadata)


@contextlib.contextmanager
def both(component: ComponentUnderTest, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """(ours, daprd), each with its own store of `component`'s kind. On Redis the app ids differ (the
    key prefix keeps their keys apart in the one server)."""
    with (
        serve(_own_store(component, "ours"), tmp_path / "ours") as ours_running,
        serve_daprd(_own_store(component, "daprd"), tmp_path / "daprd") as daprd_running,
    ):
        ours, daprd = Server("ours", ours_running), Server("daprd", daprd_running)
        try:
            yield ours, daprd
        finally:
            ours.close()
            daprd.close()


# -- the generator --------------------------------------------------------------------------------


@dataclass
class Model:
    """What each key holds (as both servers should agree), to steer around deliberate differences."""

    backend: str
    exists: dict[str, bool] = field(default_factory=dict)
    fresh_etag: dict[str, bool] = field(default_factory=dict)  # the last read ETag is still current

    def applied(self, op: Op, outcome: Outcome) -> None:
        ok = outcome[0] == "ok"
        if op.kind == "save" and ok:
            self.exists[op.key], self.fresh_etag[op.key] = True, False
        elif op.kind == "delete" and ok:
            self.exists[op.key], self.fresh_etag[op.key] = False, False
        elif op.kind == "delete_bulk" and ok:
            for key in op.keys:
                self.exists[key], self.fresh_etag[key] = False, False
        elif op.kind == "transaction" and ok:
            for o in op.ops:
                self.exists[o.key], self.fresh_etag[o.key] = o.kind == "upsert", False
        elif op.kind == "get" and ok:
            self.exists[op.key] = outcome[1] != "absent"
            self.fresh_etag[op.key] = self.exists[op.key]
        elif op.kind == "bulk" and ok:
            for key, (data, has_etag, _ttl) in outcome[2]:
                self.exists[key] = data is not None or has_etag
                self.fresh_etag[key] = self.exists[key]


def _etag_role(rng: random.Random, model: Model, key: str) -> str:
    role = rng.choice(["none", "none", "current", "stale", "bogus"])
    if model.backend == "redis":
        if not model.exists.get(key) and role != "none":
            return "none"  # daprd's Redis accepts any ETag on a missing key (a deliberate difference)
        if role == "current" and not model.fresh_etag.get(key):
            return "none"  # its ETags count writes from 1 again after a delete: an old one may match
    return role


def _first_write(rng: random.Random, model: Model, key: str) -> bool:
    if model.backend == "redis":
        # daprd's Redis fails a first-write conflict with a plain error, and transactions on a key
        # created by a first-write (deliberate differences, asserted below).
        return False
    if model.backend == "postgresql" and model.exists.get(key):
        return False  # daprd's PostgreSQL fails a first-write conflict with a plain error (the same)
    return rng.random() < 0.2


def _ttl(rng: random.Random, model: Model) -> str | None:
    if model.backend == "redis":
        return None  # daprd's Redis reports no ttlExpireTime and keeps an old TTL (deliberate difference)
    return rng.choice([None, None, "3600", "-1", "0"])


def next_op(rng: random.Random, model: Model) -> Op:
    via = rng.choice(["http", "grpc"])
    key = rng.choice(KEYS)
    kind = rng.choices(
        ["save", "get", "bulk", "delete", "delete_bulk", "transaction", "query"], [6, 5, 2, 2, 1, 2, 1]
    )[0]
    value = {"n": rng.randrange(100), "s": rng.choice(["red", "blue"])}
    # daprd's PostgreSQL store keeps gRPC values not declared JSON as binary, out of queries' sight;
    # ours searches any JSON value (a deliberate difference): there, declare them.
    as_json = model.backend == "postgresql"
    if kind == "save":
        return Op(
            "save",
            via,
            key=key,
            value=value,
            etag=_etag_role(rng, model, key),
            first_write=_first_write(rng, model, key),
            ttl=_ttl(rng, model),
            json_content=as_json,
        )
    if kind == "get":
        return Op("get", via, key=key)
    if kind == "bulk":
        return Op("bulk", via, keys=tuple(rng.sample(KEYS, rng.randint(1, 4))))
    if kind == "delete":
        return Op("delete", via, key=key, etag=_etag_role(rng, model, key))
    if kind == "delete_bulk":
        return Op("delete_bulk", "grpc", keys=tuple(rng.sample(KEYS, 2)))
    if kind == "transaction":
        if as_json:
            via = "http"  # daprd hands stores a gRPC transaction's values as bytes, whatever contentType
        keys = rng.sample(KEYS, rng.randint(1, 3))
        ops = []
        for k in keys:
            # daprd's Redis applies a transaction's operations one by one (deliberate difference):
            # there, only transactions that cannot fail.
            role = "none" if model.backend == "redis" else _etag_role(rng, model, k)
            if rng.random() < 0.6:
                ops.append(
                    Op(
                        "upsert",
                        via,
                        key=k,
                        value=value,
                        etag=role,
                        ttl=_ttl(rng, model),
                        json_content=as_json,
                    )
                )
            else:
                ops.append(Op("delete", via, key=k, etag=role))
        return Op("transaction", via, ops=tuple(ops))
    if model.backend == "postgresql":  # the one store both offer queries on
        return Op("query", via, query={"filter": {"EQ": {"s": rng.choice(["red", "blue"])}}})
    return Op("get", via, key=key)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sequences_agree(component: ComponentUnderTest, tmp_path: Path, seed: int) -> None:
    rng = random.Random(f"{component.family}-{seed}")  # Sentinel and Cluster: the sequences of Redis
    model = Model(component.family)
    with both(component, tmp_path) as (ours, daprd):
        history: list[str] = []
        for _ in range(OPS_PER_SEQUENCE):
            op = next_op(rng, model)
            ((_, mine, theirs),) = list(pairs([op], ours, daprd))
            history.append(
                f"{op} -> ours {mine}, daprd {theirs} etags {ours.etags.get(op.key)} {daprd.etags.get(op.key)}"
            )
            assert mine == theirs, "\n".join(
                [*history, f"ours: {ours.last_message}", f"daprd: {daprd.last_message}"]
            )
            model.applied(op, mine)
        # Everything each server holds at the end, read both ways.
        for via in ("http", "grpc"):
            final = Op("bulk", via, keys=KEYS)
            assert (ours.run(final)) == (daprd.run(final))


def test_ttl_expiry_agrees(component: ComponentUnderTest, tmp_path: Path) -> None:
    with both(component, tmp_path) as (ours, daprd):
        for via in ("http", "grpc"):
            save = Op("save", via, key=f"short-{via}", value={"v": 1}, ttl="1")
            assert ours.run(save) == daprd.run(save) == ("ok", 204 if via == "http" else "done")
        deadline = time.monotonic() + 30
        while True:
            gets = [Op("get", via, key=f"short-{via}") for via in ("http", "grpc")]
            results = [((ours.run(g)), (daprd.run(g))) for g in gets]
            if all(a == b == ("ok", "absent") for a, b in results):
                break
            assert time.monotonic() < deadline, results
            time.sleep(0.25)


# -- deliberate differences, asserted ---------------------------------------------------------------


def _prepare(ours: Server, daprd: Server, *ops: Op) -> None:
    for op in ops:
        assert ours.run(op)[0] == daprd.run(op)[0] == "ok", op


def _diff(ours: Server, daprd: Server, op: Op) -> tuple[Outcome, Outcome]:
    return (ours.run(op)), (daprd.run(op))


@pytest.mark.parametrize("via", ["http", "grpc"])
@pytest.mark.parametrize("backend", ["redis", "postgresql"])
def test_first_write_conflict_is_an_etag_error(
    backend: str, via: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    component = ComponentUnderTest(backend, BACKENDS[backend], request.getfixturevalue(f"{backend}_metadata"))
    with both(component, tmp_path) as (ours, daprd):
        _prepare(ours, daprd, Op("save", via, key="fw", value=1))
        mine, theirs = _diff(ours, daprd, Op("save", via, key="fw", value=2, first_write=True))
        conflict = ("error", 409, "ERR_STATE_SAVE") if via == "http" else ("error", "ABORTED")
        if backend == "redis":  # daprd's Redis writes over a key that no first-write created
            assert (mine, theirs) == (conflict, ("ok", 204) if via == "http" else ("ok", "done"))
        else:  # daprd's PostgreSQL refuses with a plain store error
            failed = ("error", 500, "ERR_STATE_SAVE") if via == "http" else ("error", "INTERNAL")
            assert (mine, theirs) == (conflict, failed)


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_redis_writes_after_a_first_write(via: str, redis_metadata: dict[str, str], tmp_path: Path) -> None:
    with both(ComponentUnderTest("redis", "state.redis", redis_metadata), tmp_path) as (ours, daprd):
        _prepare(ours, daprd, Op("save", via, key="fw", value=1, first_write=True))
        # daprd's Redis then refuses every write without an ETag to that key, with a store error.
        saved = ("ok", 204) if via == "http" else ("ok", "done")
        failed = ("error", 500, "ERR_STATE_SAVE") if via == "http" else ("error", "INTERNAL")
        assert _diff(ours, daprd, Op("save", via, key="fw", value=2)) == (saved, failed)
        tx_failed = ("error", 500, "ERR_STATE_TRANSACTION") if via == "http" else ("error", "INTERNAL")
        upsert = Op("transaction", via, ops=(Op("upsert", via, key="fw", value=3),))
        assert _diff(ours, daprd, upsert) == (saved, tx_failed)
        assert _diff(ours, daprd, Op("get", via, key="fw")) == (
            ("ok", 200, 3, True, False),
            ("ok", 200, 1, True, False),
        )


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_redis_etag_with_explicit_last_write(
    via: str, redis_metadata: dict[str, str], tmp_path: Path
) -> None:
    with both(ComponentUnderTest("redis", "state.redis", redis_metadata), tmp_path) as (ours, daprd):
        _prepare(ours, daprd, Op("save", via, key="lw", value=1), Op("get", via, key="lw"))
        _prepare(ours, daprd, Op("save", via, key="lw", value=2))
        # daprd's Redis ignores the ETag when last-write is explicit, as the Go SDK always sends it.
        mine, theirs = _diff(ours, daprd, Op("save", via, key="lw", value=3, etag="stale", last_write=True))
        conflict = ("error", 409, "ERR_STATE_SAVE") if via == "http" else ("error", "ABORTED")
        assert (mine, theirs) == (conflict, ("ok", 204) if via == "http" else ("ok", "done"))


def test_redis_etags_are_not_reused(redis_metadata: dict[str, str], tmp_path: Path) -> None:
    with both(ComponentUnderTest("redis", "state.redis", redis_metadata), tmp_path) as (ours, daprd):
        _prepare(ours, daprd, Op("save", "http", key="r", value=1), Op("get", "http", key="r"))
        _prepare(ours, daprd, Op("delete", "http", key="r"), Op("save", "http", key="r", value=2))
        # daprd's Redis counts a key's writes from 1 again: the ETag read before the delete matches.
        mine, theirs = _diff(ours, daprd, Op("save", "http", key="r", value=3, etag="current"))
        assert (mine, theirs) == (("error", 409, "ERR_STATE_SAVE"), ("ok", 204))


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_redis_etag_on_missing_key(via: str, redis_metadata: dict[str, str], tmp_path: Path) -> None:
    with both(ComponentUnderTest("redis", "state.redis", redis_metadata), tmp_path) as (ours, daprd):
        mine, theirs = _diff(ours, daprd, Op("save", via, key="nokey", value=1, etag="bogus"))
        conflict = ("error", 409, "ERR_STATE_SAVE") if via == "http" else ("error", "ABORTED")
        assert (mine, theirs) == (conflict, ("ok", 204 if via == "http" else "done"))


def test_redis_ttl_expire_time(redis_metadata: dict[str, str], tmp_path: Path) -> None:
    with both(ComponentUnderTest("redis", "state.redis", redis_metadata), tmp_path) as (ours, daprd):
        _prepare(ours, daprd, Op("save", "grpc", key="t", value=1, ttl="3600"))
        mine, theirs = _diff(ours, daprd, Op("get", "grpc", key="t"))
        assert (mine, theirs) == (("ok", 200, 1, True, True), ("ok", 200, 1, True, False))


def test_redis_transactions_all_or_nothing(redis_metadata: dict[str, str], tmp_path: Path) -> None:
    with both(ComponentUnderTest("redis", "state.redis", redis_metadata), tmp_path) as (ours, daprd):
        _prepare(ours, daprd, Op("save", "http", key="a", value=1), Op("get", "http", key="a"))
        failing = Op(
            "transaction",
            "http",
            ops=(
                Op("upsert", "http", key="b", value=2),
                Op("upsert", "http", key="a", value=3, etag="bogus"),
            ),
        )
        failed = ("error", 500, "ERR_STATE_TRANSACTION")
        assert _diff(ours, daprd, failing) == (failed, failed)
        after = Op("bulk", "http", keys=("a", "b"))
        # Ours wrote nothing; daprd's Redis wrote the operation before the one that failed.
        assert ours.run(after) == ("ok", 200, (("a", (1, True, False)), ("b", (None, False, False))))
        assert daprd.run(after) == ("ok", 200, (("a", (1, True, False)), ("b", (2, True, False))))


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_query_offered_where_daprd_refuses(component: ComponentUnderTest, via: str, tmp_path: Path) -> None:
    with both(component, tmp_path) as (ours, daprd):
        _prepare(ours, daprd, Op("save", via, key="q", value={"s": "red"}))
        mine, theirs = _diff(ours, daprd, Op("query", via, query={"filter": {"EQ": {"s": "red"}}}))
        found = ("ok", 200, (("q", '{"s": "red"}'),))
        refused_http = ("error", 500, "ERR_STATE_STORE_NOT_SUPPORTED")
        refused_grpc = ("error", "INTERNAL")
        refused = refused_http if via == "http" else refused_grpc
        expected = {
            "in_memory": (found, refused),  # daprd: no query on in-memory, SQLite, MySQL
            "sqlite": (found, refused),
            "mysql": (found, refused),
            # daprd's PostgreSQL keeps a gRPC value saved without contentType JSON as binary,
            # which queries never see; ours searches every JSON value.
            "postgresql": (found, found if via == "http" else ("ok", 200, ())),
            # Redis: we offer no query; daprd's store tries and fails without RediSearch.
            "redis": (refused, ("error", 500, "ERR_STATE_QUERY") if via == "http" else refused_grpc),
        }
        assert (mine, theirs) == expected[component.family]


@pytest.mark.parametrize("via", ["http", "grpc"])
def test_transaction_with_empty_key(via: str, tmp_path: Path) -> None:
    memory = ComponentUnderTest("in_memory", "state.in-memory", {})
    with both(memory, tmp_path) as (ours, daprd):
        mine, theirs = _diff(ours, daprd, Op("transaction", via, ops=(Op("upsert", via, key="", value=1),)))
        if via == "http":
            assert (mine, theirs) == (("error", 400, "ERR_MALFORMED_REQUEST"), ("ok", 204))
        else:
            assert (mine, theirs) == (("error", "INVALID_ARGUMENT"), ("ok", "done"))
