#!/usr/bin/env python3
"""asyncpg with its statement cache on, many connections at once, for
tests/drivers.rs.

Every asyncpg query is a named prepared statement kept in a per-connection
cache. asyncpg numbers statements per process (`__asyncpg_stmt_N__`), so
the connections are spread over several processes, as an application's
workers are: the same names then stand for different queries on different
connections (each connection's first statement has a text of its own).
Each connection (not an asyncpg pool) uses fetch/fetchval/fetchrow/execute/
executemany, explicit conn.prepare(), transactions with savepoints and
deliberate rollbacks, a cursor, and an error from a cached statement
followed by its reuse; every answer is computed from the parameters. Odd
connections shrink the cache (statement_cache_size=4) and rotate through
20 query texts, so asyncpg keeps closing evicted statements. Finally a
schema change behind a cached `SELECT *`: asyncpg recovers from "cached
plan must not change result type" by re-preparing, as it does directly.

Usage: asyncpg_test.py --host H --port P --user U --password PW --dbname D
       [--clients N] [--processes K] [--iterations M]
Exits 0 only if every query succeeded and returned what it should.
"""

import argparse
import asyncio
import concurrent.futures
import datetime
import decimal
import multiprocessing
import sys
import traceback

import asyncpg

CHURN_TEXTS = 20
CHURN_CACHE = 4


class Wrong(Exception):
    """A query answered something other than what it should have."""


class Rollback(Exception):
    """Raised inside a transaction block to roll it back."""


def expect(got, want, what):
    if got != want:
        raise Wrong(f"{what}: got {got!r}, want {want!r}")


async def connect(args, **kw):
    return await asyncpg.connect(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        database=args.dbname,
        timeout=20,
        **kw,
    )


class Worker:
    def __init__(self, args, w):
        self.args = args
        self.w = w
        self.churn = w % 2 == 1
        self.rows = 0
        self.total = 0
        self.queries = 0
        self.pids = set()
        self.step = "connect"

    async def check_rows(self, conn):
        self.queries += 1
        row = await conn.fetchrow("SELECT count(*), coalesce(sum(i), 0) FROM items WHERE worker = $1", self.w)
        expect(tuple(row), (self.rows, self.total), f"worker {self.w} rows (count, sum)")

    async def run(self):
        w = self.w
        kw = {"statement_cache_size": CHURN_CACHE} if self.churn else {}
        conn = await connect(self.args, **kw)
        try:
            self.step = "first statement"
            # The same name on every connection, a different text on each.
            expect(await conn.fetchval(f"SELECT $1::int4 + {w} /* worker {w} */", 1), 1 + w, "first statement")
            self.step = "explicit prepare"
            mul = await conn.prepare("SELECT $1::int4 * 1000 + $2::int4 AS n, pg_backend_pid() AS pid")
            series = await conn.prepare("SELECT g, g * $2::int8 FROM generate_series(1, $1::int4) g")
            insert = await conn.prepare("INSERT INTO items (worker, i, v) VALUES ($1, $2, $3)")
            for i in range(self.args.iterations):
                await self.iteration(conn, i, mul, series, insert)
            self.step = "final count"
            await self.check_rows(conn)
        finally:
            await conn.close()

    async def iteration(self, conn, i, mul, series, insert):
        w = self.w
        self.queries += 6
        self.step = f"iteration {i}: explicit prepared statement"
        row = await mul.fetchrow(w, i)
        expect(row["n"], w * 1000 + i, "prepared fetchrow")
        self.pids.add(row["pid"])

        self.step = f"iteration {i}: cached fetchval"
        got = await conn.fetchval("SELECT $1::text || '-' || $2::int4::text", str(w), i)
        expect(got, f"{w}-{i}", "fetchval")

        self.step = f"iteration {i}: prepared multi-row fetch"
        n = i % 7 + 1
        expect([tuple(r) for r in await series.fetch(n, i)], [(g, g * i) for g in range(1, n + 1)], "series")

        self.step = f"iteration {i}: types"
        row = await conn.fetchrow(
            "SELECT $1::numeric + 1, $2::date + 1, $3::float8 / 4, $4::int8[], $5::bool",
            decimal.Decimal(f"{i}.25"),
            datetime.date(2024, 1, 1 + i % 28),
            float(i),
            [w, i],
            i % 2 == 0,
        )
        expect(
            tuple(row),
            (decimal.Decimal(f"{i + 1}.25"), datetime.date(2024, 1, 2 + i % 28), i / 4, [w, i], i % 2 == 0),
            "typed fetchrow",
        )

        if self.churn:
            self.step = f"iteration {i}: cache churn"
            k = (i * 7 + w) % CHURN_TEXTS
            self.queries += 1
            expect(await conn.fetchval(f"SELECT $1::int8 + {k} /* churn {k} */", i), i + k, f"churn text {k}")

        self.step = f"iteration {i}: insert"
        if i % 3 == 0:
            async with conn.transaction():
                expect(await insert.fetch(w, i, f"v{i}"), [], "prepared insert")
                got = await conn.fetchval("SELECT count(*) FROM items WHERE worker = $1", w)
                expect(got, self.rows + 1, "count inside transaction")
                self.queries += 1
        else:
            expect(await conn.execute("INSERT INTO items (worker, i, v) VALUES ($1, $2, $3)", w, i, f"v{i}"),
                   "INSERT 0 1", "execute status")
        self.rows += 1
        self.total += i
        await self.check_rows(conn)

        if i % 10 == 5:
            self.step = f"iteration {i}: rolled-back transaction and savepoint"
            self.queries += 3
            async with conn.transaction():
                await conn.execute("INSERT INTO items (worker, i, v) VALUES ($1, $2, 'kept')", w, -i)
                try:
                    async with conn.transaction():
                        await insert.fetch(w, -i, "savepoint")
                        raise Rollback()
                except Rollback:
                    pass
            self.rows += 1
            self.total -= i
            try:
                async with conn.transaction():
                    await insert.fetch(w, 1_000_000 + i, "gone")
                    raise Rollback()
            except Rollback:
                pass
            await self.check_rows(conn)

        if i % 20 == 0:
            self.step = f"iteration {i}: executemany"
            batch = [(w, 10_000 + i * 10 + j, "many") for j in range(10)]
            await conn.executemany("INSERT INTO items (worker, i, v) VALUES ($1, $2, $3)", batch)
            self.queries += len(batch)
            self.rows += len(batch)
            self.total += sum(b[1] for b in batch)
            await self.check_rows(conn)

        if i % 30 == 11:
            self.step = f"iteration {i}: cursor"
            async with conn.transaction():
                got = [r[0] async for r in conn.cursor("SELECT g * $2::int4 FROM generate_series(1, $1::int4) g",
                                                         25, i, prefetch=7)]
            expect(got, [g * i for g in range(1, 26)], "cursor rows")
            self.queries += 1

        if i % 25 == 7:
            self.step = f"iteration {i}: error from a cached statement"
            self.queries += 2
            try:
                await conn.fetchval("SELECT 1 / $1::int4", 0)
                raise Wrong("division by zero did not fail")
            except asyncpg.DivisionByZeroError:
                pass
            expect(await conn.fetchval("SELECT 1 / $1::int4", 1), 1, "statement reused after its error")


async def schema_change(args):
    """A cached `SELECT *` whose result changes shape under it."""
    a = await connect(args)
    b = await connect(args)
    try:
        await a.execute("CREATE TABLE shape (x int)")
        await a.execute("INSERT INTO shape VALUES (1)")
        for _ in range(3):
            expect([tuple(r) for r in await a.fetch("SELECT * FROM shape")], [(1,)], "before ALTER")
        await b.execute("ALTER TABLE shape ADD COLUMN y int DEFAULT 7")
        for _ in range(3):
            expect([tuple(r) for r in await a.fetch("SELECT * FROM shape")], [(1, 7)], "after ALTER")
    finally:
        await a.close()
        await b.close()


async def run_group(args, ws):
    """Connections `ws`, concurrently in this process."""
    workers = [Worker(args, w) for w in ws]
    failures = []

    async def run(worker):
        try:
            await worker.run()
        except Exception:
            failures.append(f"worker {worker.w} at {worker.step}:\n{traceback.format_exc()}")

    await asyncio.gather(*(run(wk) for wk in workers))
    return [(wk.rows, wk.queries, wk.pids) for wk in workers], failures


def group_main(args, ws):
    return asyncio.run(run_group(args, ws))


async def setup(args):
    conn = await connect(args)
    try:
        await conn.execute("CREATE TABLE items (worker int NOT NULL, i int NOT NULL, v text)")
    finally:
        await conn.close()


async def finish(args, rows):
    failures = []
    try:
        conn = await connect(args)
        try:
            expect(await conn.fetchval("SELECT count(*) FROM items"), rows, "rows in items")
        finally:
            await conn.close()
    except Exception:
        failures.append(f"final count:\n{traceback.format_exc()}")
    try:
        await schema_change(args)
    except Exception:
        failures.append(f"schema change:\n{traceback.format_exc()}")
    return failures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--dbname", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--iterations", type=int, default=150)
    args = p.parse_args()

    asyncio.run(setup(args))
    groups = [list(range(g, args.clients, args.processes)) for g in range(args.processes)]
    results, failures = [], []
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(groups), mp_context=ctx) as ex:
        for res, fails in ex.map(group_main, [args] * len(groups), groups):
            results.extend(res)
            failures.extend(fails)
    if not failures:
        failures.extend(asyncio.run(finish(args, sum(r[0] for r in results))))

    queries = sum(r[1] for r in results)
    moved = sum(1 for r in results if len(r[2]) > 1)
    servers = len(set().union(*(r[2] for r in results)))
    print(
        f"asyncpg {asyncpg.__version__}: {args.clients} connections in {args.processes} processes x "
        f"{args.iterations} iterations, {queries} queries, {len(failures)} failures; {moved} connections ran on "
        f"more than one server, {servers} servers in all"
    )
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
