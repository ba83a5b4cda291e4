#!/usr/bin/env python3
"""psycopg 3 with every query prepared server-side (prepare_threshold=0),
many connections at once, for tests/drivers.rs.

Each worker thread has its own connection and runs parameterised queries
whose answers are computed from the parameters (a statement mixed up with
another gives a wrong answer, not just an error): typed SELECTs, INSERTs
with counts checked after each, conn.transaction() blocks (with savepoints
and deliberate rollbacks), executemany, explicit pipelines, an error from a
prepared statement followed by its reuse, DEALLOCATE ALL and DISCARD ALL.
Half the workers shrink psycopg's statement cache (prepared_max = 5) and
rotate through 20 query texts, so psycopg keeps closing evicted statements
(protocol Close with libpq >= 17, SQL `DEALLOCATE name` before that).
Each worker's first statement has a worker-specific text, so every
connection's `_pg3_0` names a different query.

Usage: psycopg_test.py --host H --port P --user U --password PW --dbname D
       [--clients N] [--iterations M]
Exits 0 only if every query succeeded and returned what it should.
"""

import argparse
import datetime
import decimal
import sys
import threading
import traceback

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

CHURN_TEXTS = 20  # distinct query texts a churning worker rotates through
CHURN_CACHE = 5  # its psycopg prepared_max


class Wrong(Exception):
    """A query answered something other than what it should have."""


def expect(got, want, what):
    if got != want:
        raise Wrong(f"{what}: got {got!r}, want {want!r}")


def connect(args, autocommit):
    return psycopg.connect(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        dbname=args.dbname,
        autocommit=autocommit,
        prepare_threshold=0,
        connect_timeout=20,
        application_name="psycopg_test",
    )


class Worker:
    def __init__(self, args, w):
        self.args = args
        self.w = w
        self.autocommit = w % 4 < 2
        self.churn = w % 2 == 1
        self.rows = 0  # committed rows of this worker in `items`
        self.total = 0  # and the sum of their `i`
        self.queries = 0
        self.pids = set()
        self.step = "connect"

    def q(self, cur, sql, params=None, prepare=None):
        self.queries += 1
        return cur.execute(sql, params, prepare=prepare)

    def commit(self, conn):
        if not self.autocommit:
            conn.commit()

    def check_rows(self, cur):
        self.q(cur, "SELECT count(*), coalesce(sum(i), 0) FROM items WHERE worker = %s", (self.w,))
        expect(cur.fetchone(), (self.rows, self.total), f"worker {self.w} rows (count, sum)")

    def run(self):
        w = self.w
        with connect(self.args, self.autocommit) as conn:
            if self.churn:
                conn.prepared_max = CHURN_CACHE
            cur = conn.cursor()
            self.step = "first statement"
            # The same name (_pg3_0) on every connection, a different text on each.
            self.q(cur, f"SELECT %s::int4 + {w} /* worker {w} */", (1,))
            expect(cur.fetchone(), (1 + w,), "worker-specific first statement")
            self.commit(conn)
            for i in range(self.args.iterations):
                self.iteration(conn, cur, i)
            self.step = "final count"
            self.check_rows(cur)
            self.commit(conn)

    def iteration(self, conn, cur, i):
        w = self.w
        self.step = f"iteration {i}: computed select"
        self.q(
            cur,
            "SELECT %s::int4 * 1000 + %s::int4, %s::text || '-' || %s::text, %s::float8 / 4, %s::bool, "
            "pg_backend_pid()",
            (w, i, str(w), str(i), float(i), i % 2 == 0),
        )
        row = cur.fetchone()
        expect(row[:4], (w * 1000 + i, f"{w}-{i}", i / 4, i % 2 == 0), "computed select")
        self.pids.add(row[4])

        self.step = f"iteration {i}: multi-row select"
        n = i % 7 + 1
        self.q(cur, "SELECT g, g * %s::int8 FROM generate_series(1, %s::int4) g", (i, n))
        expect(cur.fetchall(), [(g, g * i) for g in range(1, n + 1)], "generate_series rows")

        self.step = f"iteration {i}: types"
        self.q(
            cur,
            "SELECT %s::numeric + 1, %s::date + 1, %s::jsonb -> 'k', %s::int8[]",
            (decimal.Decimal(f"{i}.25"), datetime.date(2024, 1, 1 + i % 28), Jsonb({"k": [w, i]}), [w, i]),
        )
        expect(
            cur.fetchone(),
            (decimal.Decimal(f"{i + 1}.25"), datetime.date(2024, 1, 2 + i % 28), [w, i], [w, i]),
            "typed select",
        )

        if self.churn:
            self.step = f"iteration {i}: cache churn"
            k = (i * 7 + w) % CHURN_TEXTS
            self.q(cur, f"SELECT %s::int8 + {k} /* churn {k} */", (i,))
            expect(cur.fetchone(), (i + k,), f"churn text {k}")

        self.step = f"iteration {i}: insert"
        if i % 3 == 0:
            with conn.transaction():
                self.q(cur, "INSERT INTO items (worker, i, v) VALUES (%s, %s, %s)", (w, i, f"v{i}"))
                expect(cur.rowcount, 1, "insert rowcount")
                self.q(cur, "SELECT count(*) FROM items WHERE worker = %s", (w,))
                expect(cur.fetchone(), (self.rows + 1,), "count inside transaction")
            self.rows += 1
            self.total += i
        else:
            self.q(cur, "INSERT INTO items (worker, i, v) VALUES (%s, %s, %s)", (w, i, f"v{i}"))
            expect(cur.rowcount, 1, "insert rowcount")
            self.commit(conn)
            self.rows += 1
            self.total += i
        self.check_rows(cur)
        self.commit(conn)

        if i % 10 == 5:
            self.step = f"iteration {i}: rolled-back transaction and savepoint"
            with conn.transaction():
                self.q(cur, "INSERT INTO items (worker, i, v) VALUES (%s, %s, 'kept')", (w, -i))
                with conn.transaction():
                    self.q(cur, "INSERT INTO items (worker, i, v) VALUES (%s, %s, 'savepoint')", (w, -i))
                    raise psycopg.Rollback()
            self.rows += 1
            self.total -= i
            with conn.transaction():
                self.q(cur, "INSERT INTO items (worker, i, v) VALUES (%s, %s, 'gone')", (w, 1_000_000 + i))
                raise psycopg.Rollback()
            self.check_rows(cur)
            self.commit(conn)

        if i % 20 == 0:
            self.step = f"iteration {i}: executemany"
            batch = [(w, 10_000 + i * 10 + j, "many") for j in range(10)]
            cur.executemany("INSERT INTO items (worker, i, v) VALUES (%s, %s, %s)", batch)
            self.queries += len(batch)
            self.commit(conn)
            self.rows += len(batch)
            self.total += sum(b[1] for b in batch)
            self.check_rows(cur)
            self.commit(conn)

        if i % 10 == 2:
            self.step = f"iteration {i}: pipeline"
            with conn.pipeline():
                curs = []
                for k in range(6):
                    c = conn.cursor()
                    self.q(c, "SELECT %s::int4 * %s::int4, %s::text", (i, k, f"p{k}"))
                    curs.append(c)
            for k, c in enumerate(curs):
                expect(c.fetchone(), (i * k, f"p{k}"), f"pipelined query {k}")
            self.commit(conn)

        if i % 25 == 7:
            self.step = f"iteration {i}: error from a prepared statement"
            try:
                self.q(cur, "SELECT 1 / %s::int4", (0,))
                raise Wrong("division by zero did not fail")
            except errors.DivisionByZero:
                if not self.autocommit:
                    conn.rollback()
            self.q(cur, "SELECT 1 / %s::int4", (1,))
            expect(cur.fetchone(), (1,), "statement reused after its error")
            self.commit(conn)

        if i == self.args.iterations // 2:
            # psycopg forgets its statements when it sees this command tag.
            self.step = f"iteration {i}: DEALLOCATE ALL"
            self.q(cur, "DEALLOCATE ALL", prepare=False)
            self.commit(conn)

        if i == self.args.iterations * 3 // 4 and self.autocommit:
            self.step = f"iteration {i}: DISCARD ALL"
            self.q(cur, "DISCARD ALL", prepare=False)
            self.q(cur, f"SELECT %s::int4 + {w} /* worker {w} */", (i,))
            expect(cur.fetchone(), (i + w,), "worker-specific statement after DISCARD ALL")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--dbname", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--iterations", type=int, default=150)
    args = p.parse_args()

    try:
        has_close = psycopg.capabilities.has_send_close_prepared()
    except AttributeError:  # psycopg < 3.2: libpq 17 brought PQsendClosePrepared
        has_close = psycopg.pq.version() >= 170000
    close = "protocol Close" if has_close else "SQL DEALLOCATE"
    print(
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} implementation, libpq {psycopg.pq.version()}), "
        f"evicted statements closed with {close}"
    )

    with connect(args, True) as conn:
        conn.execute("CREATE TABLE items (worker int NOT NULL, i int NOT NULL, v text)")

    workers = [Worker(args, w) for w in range(args.clients)]
    failures = []
    lock = threading.Lock()

    def run(worker):
        try:
            worker.run()
        except Exception:
            with lock:
                failures.append(f"worker {worker.w} at {worker.step}:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=run, args=(wk,)) for wk in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    if not failures:
        try:
            with connect(args, True) as conn:
                got = conn.execute("SELECT count(*) FROM items").fetchone()[0]
                expect(got, sum(wk.rows for wk in workers), "rows in items")
        except Exception:
            failures.append(f"final count:\n{traceback.format_exc()}")

    queries = sum(wk.queries for wk in workers)
    moved = sum(1 for wk in workers if len(wk.pids) > 1)
    print(
        f"psycopg: {args.clients} connections x {args.iterations} iterations, {queries} queries, "
        f"{len(failures)} failed workers; {moved} connections ran on more than one server, "
        f"{len(set().union(*(wk.pids for wk in workers)))} servers in all"
    )
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
