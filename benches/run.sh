#!/usr/bin/env bash
# benches/run.sh — reproducible comparison of pgbalancer, PgBouncer and direct
# PostgreSQL 15 with pgbench, plus an idle-connection memory benchmark.
#
# PostgreSQL runs as a primary and a streaming replica (pg_basebackup -R). Every
# workload goes to the primary, except `routed-*`, where pgbalancer spreads the
# reads over both (direct and PgBouncer stay on the primary, which is all they can do).
#
#   benches/run.sh            full: 3 interleaved rounds of 10 s per workload, writes docs/benchmarks.md
#   benches/run.sh --quick    1 round of 5 s per workload, writes docs/benchmarks.md
#   benches/run.sh --smoke    ~10 s of load, checks for failures, exits non-zero on any; writes no doc
#
# Environment overrides: BENCH_ROUNDS, BENCH_DURATION (s), BENCH_SCALE (pgbench -s),
# BENCH_IDLE_CLIENTS, PGBALANCER_BIN (skip the cargo build), PGBALANCER_PG_BIN.
# Everything runs on 127.0.0.1; every process started here is stopped on exit,
# Ctrl-C or failure (trap EXIT), and the temporary cluster is removed.
set -euo pipefail

MODE=full
for arg in "$@"; do
  case "$arg" in
    --quick) MODE=quick ;;
    --smoke) MODE=smoke ;;
    --full) MODE=full ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "benches/run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/benches
PG_BIN=${PGBALANCER_PG_BIN:-/usr/lib/postgresql/15/bin}
case $MODE in
  full)  ROUNDS=${BENCH_ROUNDS:-3}; DURATION=${BENCH_DURATION:-10}; SCALE=${BENCH_SCALE:-10}; IDLE=${BENCH_IDLE_CLIENTS:-10000} ;;
  quick) ROUNDS=${BENCH_ROUNDS:-1}; DURATION=${BENCH_DURATION:-5};  SCALE=${BENCH_SCALE:-10}; IDLE=${BENCH_IDLE_CLIENTS:-10000} ;;
  smoke) ROUNDS=${BENCH_ROUNDS:-1}; DURATION=${BENCH_DURATION:-1};  SCALE=${BENCH_SCALE:-1};  IDLE=${BENCH_IDLE_CLIENTS:-200} ;;
esac
SETTLE=1; [ "$MODE" = smoke ] && SETTLE=0.2   # seconds to let RSS settle in the memory benchmark
POOL_SIZE=20
export PGCONNECT_TIMEOUT=10 PGAPPNAME=bench PGSSLMODE=disable

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ----------------------------------------------------------------- cleanup
WORK=""; PG_STARTED=0; REPLICA_STARTED=0; BAL_PID=""; ROUTED_PID=""; BOUNCER_PID=""; BOUNCER_WRAPPER=""; LOADGEN_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$LOADGEN_PID" ] && kill "$LOADGEN_PID" 2>/dev/null || true
  for p in $BAL_PID $ROUTED_PID; do kill -INT "$p" 2>/dev/null; sleep 0.3; kill -INT "$p" 2>/dev/null; done || true
  [ -n "$BOUNCER_PID" ] && kill -INT "$BOUNCER_PID" 2>/dev/null || true
  [ -n "$BOUNCER_WRAPPER" ] && kill "$BOUNCER_WRAPPER" 2>/dev/null || true
  for p in $LOADGEN_PID $BAL_PID $ROUTED_PID $BOUNCER_PID $BOUNCER_WRAPPER; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "$REPLICA_STARTED" = 1 ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/replica" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ "$PG_STARTED" = 1 ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$rc" != 0 ]; then
      for f in pgbalancer.log pgbalancer-routed.log pgbouncer.log pg/postgresql.log pg/replica.log; do
        [ -s "$WORK/$f" ] && { echo "---- tail of $f" >&2; tail -n 15 "$WORK/$f" >&2; }
      done
    fi
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ----------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and PgBouncer are started as user postgres with runuser)"
"$ROOT/scripts/setup" >&2
need_pkgs=()
command -v pgbouncer >/dev/null 2>&1 || need_pkgs+=(pgbouncer)
[ "$MODE" = smoke ] || command -v gnuplot >/dev/null 2>&1 || need_pkgs+=(gnuplot-nox)
[ "$MODE" = smoke ] || command -v valgrind >/dev/null 2>&1 || need_pkgs+=(valgrind)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$MODE" = smoke ]; then
    log "pgbouncer not installed: smoke mode checks direct and pgbalancer only"
  else
    log "apt-get install ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" </dev/null >&2
  fi
fi
HAVE_BOUNCER=0; command -v pgbouncer >/dev/null 2>&1 && HAVE_BOUNCER=1
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the idle-connection load generator"

if [ -n "${PGBALANCER_BIN:-}" ]; then
  BAL_BIN=$PGBALANCER_BIN
else
  log "cargo build --release --bin pgbalancer"
  (cd "$ROOT" && cargo build --release --bin pgbalancer >&2)
  BAL_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/pgbalancer
fi
[ -x "$BAL_BIN" ] || die "no pgbalancer binary at $BAL_BIN"

# 10,000 idle clients need 10,000 descriptors in the load generator and in each pooler.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((IDLE + 200)) ] ||
  die "ulimit -n is $(ulimit -n); the memory benchmark needs $((IDLE + 200)) (raise the hard limit or set BENCH_IDLE_CLIENTS)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { # name port
  for _ in $(seq 1 100); do
    psql -X -q -h 127.0.0.1 -p "$2" -U postgres -d bench -Atc 'select 1' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$1 did not accept connections on port $2"
}

WORK=$(mktemp -d /tmp/pgbalancer-bench.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.csv
echo "workload,target,round,clients,tps,latency_ms,processed,failed_tx,aborted_clients,exit_code,first_error,pooler_user_us,pooler_sys_us,postgres_us,machine_us,replica_us" > "$RESULTS"

# ----------------------------------------------------------------- TLS material
# One self-signed certificate for 127.0.0.1, used by all three targets for the
# "over TLS" workloads (clients use sslmode=require: encryption, no verification).
command -v openssl >/dev/null || die "openssl is needed for the TLS workloads (apt-get install openssl)"
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$WORK/tls/server.key" -out "$WORK/tls/server.crt" >/dev/null 2>&1 ||
  die "openssl could not make the benchmark certificate"
chown -R postgres: "$WORK/tls"; chmod 600 "$WORK/tls/server.key"

# ----------------------------------------------------------------- PostgreSQL 15
PGPORT=$(free_port)
mkdir -p "$WORK/pg"; chown postgres: "$WORK/pg"   # data directory, socket and log, owned by postgres
log "initdb + PostgreSQL 15 on 127.0.0.1:$PGPORT (fsync=off, synchronous_commit=off, full_page_writes=off)"
runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres -A trust -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 ||
  { cat "$WORK/initdb.log" >&2; die initdb; }
cat >>"$WORK/pg/data/postgresql.conf" <<EOF
# benches/run.sh: throwaway benchmark cluster — durability off on purpose.
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK/pg'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
autovacuum = off
log_min_messages = warning
ssl = on
ssl_cert_file = '$WORK/tls/server.crt'
ssl_key_file = '$WORK/tls/server.key'
EOF
cat >"$WORK/pg/data/pg_hba.conf" <<'EOF'
local all all trust
host  all all 127.0.0.1/32 trust
host  replication all 127.0.0.1/32 trust
EOF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/postgresql.log" -w -t 60 start >/dev/null
PG_STARTED=1
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c 'create database bench' >/dev/null
log "pgbench -i -s $SCALE"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U postgres bench >"$WORK/pgbench-init.log" 2>&1 ||
  { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i"; }
PGVERSION=$(psql -X -h 127.0.0.1 -p "$PGPORT" -U postgres -d bench -Atc 'show server_version')

# ----------------------------------------------------------------- streaming replica
# Taken after pgbench -i, so it starts with the data; same settings (postgresql.conf
# comes with the base backup), its own port.
REPLICA_PORT=$(free_port)
log "pg_basebackup -R: streaming replica on 127.0.0.1:$REPLICA_PORT"
runuser -u postgres -- "$PG_BIN/pg_basebackup" -D "$WORK/pg/replica" -h 127.0.0.1 -p "$PGPORT" -U postgres \
  -R -X stream -c fast >"$WORK/basebackup.log" 2>&1 || { cat "$WORK/basebackup.log" >&2; die pg_basebackup; }
echo "port = $REPLICA_PORT" >>"$WORK/pg/replica/postgresql.conf"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/replica" -l "$WORK/pg/replica.log" -w -t 60 start >/dev/null
REPLICA_STARTED=1
streaming=0
for _ in $(seq 1 100); do
  streaming=$(psql -X -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -Atc \
    "select count(*) from pg_stat_replication where state = 'streaming'" 2>/dev/null || echo 0)
  [ "$streaming" = 1 ] && break
  sleep 0.1
done
[ "$streaming" = 1 ] || die "the replica is not streaming from the primary"
[ "$(psql -X -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -d bench -Atc 'select pg_is_in_recovery()')" = t ] ||
  die "the replica is not in recovery"

# ----------------------------------------------------------------- poolers
BAL_PORT=$(free_port)
cat >"$WORK/pgbalancer.yml" <<EOF
# written by benches/run.sh
listen_addresses: "127.0.0.1"
port: $BAL_PORT
pool_mode: transaction
pool_size: $POOL_SIZE
max_client_conn: 20000
auth_type: trust
backends:
  - {host: 127.0.0.1, port: $PGPORT, role: primary}
log_level: warn
ssl: true
ssl_mode: allow
ssl_cert: $WORK/tls/server.crt
ssl_key: $WORK/tls/server.key
EOF
chmod 600 "$WORK/pgbalancer.yml"
"$BAL_BIN" --check-config "$WORK/pgbalancer.yml" >&2 || die "pgbalancer --check-config rejected the bench config"

# The same, with the replica as a second backend: reads are spread over both
# (pgbalancer's defaults: weighted_random, weight 1 each, the primary takes reads
# too, health checks every 5 s). Used by the `routed-*` workloads only.
ROUTED_PORT=$(free_port)
sed -e "s/^port: $BAL_PORT\$/port: $ROUTED_PORT/" \
  -e "s/^  - {host: 127.0.0.1, port: $PGPORT, role: primary}\$/&\\n  - {host: 127.0.0.1, port: $REPLICA_PORT, role: replica}/" \
  "$WORK/pgbalancer.yml" >"$WORK/pgbalancer-routed.yml"
chmod 600 "$WORK/pgbalancer-routed.yml"
grep -q "port: $REPLICA_PORT, role: replica" "$WORK/pgbalancer-routed.yml" || die "could not write pgbalancer-routed.yml"
"$BAL_BIN" --check-config "$WORK/pgbalancer-routed.yml" >&2 || die "pgbalancer --check-config rejected the routed bench config"

start_pgbalancer() {
  "$BAL_BIN" --config "$WORK/pgbalancer.yml" >>"$WORK/pgbalancer.log" 2>&1 &
  BAL_PID=$!
  wait_ready pgbalancer "$BAL_PORT"
}
stop_pgbalancer() {
  [ -n "$BAL_PID" ] || return 0
  kill -INT "$BAL_PID" 2>/dev/null || true; sleep 0.3; kill -INT "$BAL_PID" 2>/dev/null || true
  wait "$BAL_PID" 2>/dev/null || true; BAL_PID=""
}
start_routed() {
  "$BAL_BIN" --config "$WORK/pgbalancer-routed.yml" >>"$WORK/pgbalancer-routed.log" 2>&1 &
  ROUTED_PID=$!
  wait_ready "pgbalancer (routed)" "$ROUTED_PORT"
}
stop_routed() {
  [ -n "$ROUTED_PID" ] || return 0
  kill -INT "$ROUTED_PID" 2>/dev/null || true; sleep 0.3; kill -INT "$ROUTED_PID" 2>/dev/null || true
  wait "$ROUTED_PID" 2>/dev/null || true; ROUTED_PID=""
}

BOUNCER_PORT=$(free_port)
BOUNCER_VERSION=none
if [ "$HAVE_BOUNCER" = 1 ]; then
  BOUNCER_VERSION=$(pgbouncer --version | sed -n 's/^PgBouncer \([0-9.]*\).*/\1/p' | head -n1)
  # max_prepared_statements (protocol-level prepared statements in transaction mode) exists from 1.21.
  PREPARED_LINE="# max_prepared_statements: not supported by PgBouncer $BOUNCER_VERSION (needs >= 1.21)"
  if [ "$(printf '%s\n' 1.21 "$BOUNCER_VERSION" | sort -V | head -n1)" = 1.21 ]; then
    PREPARED_LINE="max_prepared_statements = 200"
  fi
  mkdir -p "$WORK/bouncer"
  cat >"$WORK/bouncer/pgbouncer.ini" <<EOF
; written by benches/run.sh — equivalent to the pgbalancer config
[databases]
* = host=127.0.0.1 port=$PGPORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/bouncer/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 20000
pidfile = $WORK/bouncer/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
client_tls_sslmode = allow
client_tls_cert_file = $WORK/tls/server.crt
client_tls_key_file = $WORK/tls/server.key
$PREPARED_LINE
EOF
  echo '"postgres" ""' >"$WORK/bouncer/userlist.txt"
  chown -R postgres: "$WORK/bouncer"
fi
start_pgbouncer() {
  [ "$HAVE_BOUNCER" = 1 ] || return 0
  rm -f "$WORK/bouncer/pgbouncer.pid"
  # PgBouncer refuses to run as root. runuser's PAM session resets the soft
  # descriptor limit, so raise it again inside.
  runuser -u postgres -- sh -c 'ulimit -n "$1" && exec pgbouncer "$2"' sh "$(ulimit -n)" "$WORK/bouncer/pgbouncer.ini" \
    >>"$WORK/pgbouncer.log" 2>&1 &
  BOUNCER_WRAPPER=$!
  for _ in $(seq 1 50); do [ -s "$WORK/bouncer/pgbouncer.pid" ] && break; sleep 0.1; done
  BOUNCER_PID=$(cat "$WORK/bouncer/pgbouncer.pid" 2>/dev/null || true)
  [ -n "$BOUNCER_PID" ] || die "pgbouncer did not start"
  wait_ready pgbouncer "$BOUNCER_PORT"
}
stop_pgbouncer() {
  [ -n "$BOUNCER_PID" ] || return 0
  kill -INT "$BOUNCER_PID" 2>/dev/null || true
  wait "$BOUNCER_WRAPPER" 2>/dev/null || true; BOUNCER_PID=""; BOUNCER_WRAPPER=""
}

port_of() { case $1 in direct) echo "$PGPORT" ;; pgbouncer) echo "$BOUNCER_PORT" ;; pgbalancer) echo "$BAL_PORT" ;; routed) echo "$ROUTED_PORT" ;; esac; }
pid_of() { case $1 in pgbouncer) echo "$BOUNCER_PID" ;; pgbalancer) echo "$BAL_PID" ;; routed) echo "$ROUTED_PID" ;; esac; }
instance_of() { # target workload -> the process that serves it (`routed-*` workloads: the routed pgbalancer)
  if [ "$1" = pgbalancer ] && [ "${2#routed-}" != "$2" ]; then echo routed; else echo "$1"; fi
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# CPU accounting (clock ticks), read around every pgbench run so the report
# can say where each transaction's CPU went.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
proc_ticks() { # pid -> "user sys" ticks of the process (all its threads)
  [ -n "$1" ] && awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null || echo "0 0"
}
pg_ticks() { # data dir -> one PostgreSQL server's ticks: postmaster, live children, reaped children
  local pm
  pm=$(head -n1 "$1/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  # cat, not awk's own file list: a backend that exits between the glob and
  # the read is skipped (awk would stop at it and print nothing).
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v pm="$pm" '$2 == "(postgres)" && ($4 == pm || $1 == pm) {t += $14 + $15}
      $1 == pm {t += $16 + $17} END {print t + 0}'
}
busy_ticks() { # every CPU of the machine, not idle (user nice system irq softirq steal)
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# ----------------------------------------------------------------- memory: idle clients
TARGETS=(direct pgbalancer); POOLERS=(pgbalancer)
[ "$HAVE_BOUNCER" = 1 ] && { TARGETS=(direct pgbouncer pgbalancer); POOLERS=(pgbouncer pgbalancer); }
MEMORY=$WORK/memory.csv
echo "pooler,clients,connected,alive,rss_before_kib,rss_after_kib,bytes_per_client,connect_seconds" >"$MEMORY"
SMOKE_FAIL=0
start_pgbalancer
start_pgbouncer
for pooler in "${POOLERS[@]}"; do
  port=$(port_of "$pooler"); pid=$(pid_of "$pooler")
  # Warm up: one client, one query, so the pool and its first server connection exist.
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -Atc 'select 1' >/dev/null
  sleep "$SETTLE"
  before=$(rss_kib "$pid")
  log "memory: $IDLE idle clients on $pooler (pid $pid, VmRSS before ${before} KiB)"
  rm -f "$WORK/loadgen.stop" "$WORK/loadgen.out"
  python3 "$BENCH_DIR/idle_clients.py" --port "$port" -n "$IDLE" --until-file "$WORK/loadgen.stop" \
    --timeout 120 --hold 120 >"$WORK/loadgen.out" 2>"$WORK/loadgen.err" &
  LOADGEN_PID=$!
  for _ in $(seq 1 1300); do grep -q '^READY' "$WORK/loadgen.out" 2>/dev/null && break; kill -0 "$LOADGEN_PID" 2>/dev/null || break; sleep 0.1; done
  read -r _ connected _failed secs < <(grep '^READY' "$WORK/loadgen.out" || echo "READY 0 $IDLE 0s")
  sleep "$SETTLE"
  after=$(rss_kib "$pid")
  touch "$WORK/loadgen.stop"
  wait "$LOADGEN_PID" || true; LOADGEN_PID=""
  read -r _ alive _dropped < <(grep '^ALIVE' "$WORK/loadgen.out" || echo "ALIVE 0 0")
  per=$(( connected > 0 ? (after - before) * 1024 / connected : 0 ))
  log "memory: $pooler connected $connected/$IDLE in ${secs}, alive $alive, VmRSS after ${after} KiB => $per bytes/client"
  [ -s "$WORK/loadgen.err" ] && sed 's/^/[loadgen] /' "$WORK/loadgen.err" >&2
  echo "$pooler,$IDLE,$connected,$alive,$before,$after,$per,${secs%s}" >>"$MEMORY"
  if [ "$connected" != "$IDLE" ] || [ "$alive" != "$IDLE" ]; then
    log "memory: $pooler did not hold all $IDLE idle clients"; SMOKE_FAIL=1
  fi
done
if [ "$MODE" != smoke ]; then
  # Fresh poolers for the throughput runs (no leftovers from 10,000 clients).
  stop_pgbalancer; stop_pgbouncer
  start_pgbalancer; start_pgbouncer
fi

# ----------------------------------------------------------------- throughput: pgbench
# name | clients | extra pgbench args | description
if [ "$MODE" = smoke ]; then
  WORKLOADS=(
    "select-c4|4|-S|select-only, 4 clients"
    "tpcb-c4|4||TPC-B, 4 clients"
    "connect-c4|4|-S -C|select-only, new connection per transaction, 4 clients"
    "tls-select-c4|4|-S @tls|select-only over TLS, 4 clients"
    "routed-select-c4|4|-S|select-only, 4 clients; pgbalancer spreads the reads over primary and replica"
  )
else
  WORKLOADS=(
    "select-c1|1|-S|select-only, 1 client (latency)"
    "select-c10|10|-S|select-only, 10 clients"
    "select-c50|50|-S|select-only, 50 clients"
    "select-c200|200|-S|select-only, 200 clients"
    "prepared-c50|50|-S -M prepared|select-only, protocol-level prepared statements, 50 clients"
    "tpcb-c50|50||TPC-B (pgbench default script), 50 clients"
    "connect-c20|20|-S -C|select-only, new connection per transaction, 20 clients"
    "tls-select-c50|50|-S @tls|select-only over TLS (sslmode=require), 50 clients"
    "tls-connect-c20|20|-S -C @tls|select-only over TLS, new connection (and handshake) per transaction, 20 clients"
    "routed-select-c50|50|-S|select-only, 50 clients; pgbalancer spreads the reads over primary and replica (direct and PgBouncer: primary only)"
  )
fi
printf '%s\n' "${WORKLOADS[@]}" >"$WORK/workloads.txt"

run_pgbench() { # workload clients args target round
  local name=$1 clients=$2 args=$3 target=$4 round=$5 port jobs out err rc=0
  local inst; inst=$(instance_of "$target" "$name")
  port=$(port_of "$inst"); jobs=$(( clients < 2 ? 1 : 2 ))
  out=$WORK/pgbench-$name-$target-$round.out; err=${out%.out}.err
  # "@tls" in the arguments: the clients connect with sslmode=require.
  local sslmode=disable
  case " $args " in *" @tls "*) sslmode=require; args=${args//@tls/} ;; esac
  local ppid pu0 ps0 pu1 ps1 pg0 pg1 rp0 rp1 m0 m1
  ppid=$(pid_of "$inst")
  read -r pu0 ps0 < <(proc_ticks "$ppid"); pg0=$(pg_ticks "$WORK/pg/data"); rp0=$(pg_ticks "$WORK/pg/replica"); m0=$(busy_ticks)
  # shellcheck disable=SC2086
  PGSSLMODE=$sslmode pgbench -n -h 127.0.0.1 -p "$port" -U postgres -T "$DURATION" -c "$clients" -j "$jobs" $args bench \
    >"$out" 2>"$err" || rc=$?
  read -r pu1 ps1 < <(proc_ticks "$ppid"); pg1=$(pg_ticks "$WORK/pg/data"); rp1=$(pg_ticks "$WORK/pg/replica"); m1=$(busy_ticks)
  local tps lat processed failed aborted first
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n1)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -n1)
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n1)
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n1)
  aborted=$(grep -cE 'client [0-9]+ .*aborted' "$err" || true)
  first=$(grep -m1 -E 'error|FATAL|ERROR' "$err" | sed 's/^pgbench: error: //; s/,/;/g; s/"/'"'"'/g' | cut -c1-160 || true)
  # Microseconds of CPU per transaction: the pooler (user, kernel), PostgreSQL
  # (primary and replica together), the whole machine (pgbench included), and
  # the replica alone (walreceiver and startup process; reads when routed).
  local n=${processed:-0} cpu_cols=",,,,"
  if [ "$n" -gt 0 ]; then
    cpu_cols=$(awk -v n="$n" -v t="$TICK_US" -v p="$ppid" -v u=$((pu1 - pu0)) -v s=$((ps1 - ps0)) \
      -v g=$((pg1 - pg0 + rp1 - rp0)) -v r=$((rp1 - rp0)) -v m=$((m1 - m0)) 'BEGIN {
        if (p == "") printf ",,"; else printf "%.2f,%.2f,", u * t / n, s * t / n
        printf "%.2f,%.2f,%.2f", g * t / n, m * t / n, r * t / n }')
  fi
  echo "$name,$target,$round,$clients,${tps:-0},${lat:-},${processed:-0},${failed:-0},${aborted:-0},$rc,\"$first\",$cpu_cols" >>"$RESULTS"
  log "$(printf '%-13s %-10s round %s: tps %10s  lat %8s ms  failed %s  aborted clients %s  exit %s' \
    "$name" "$target" "$round" "${tps:-0}" "${lat:--}" "${failed:-0}" "${aborted:-0}" "$rc")"
  if [ "$MODE" = smoke ] && { [ "$rc" != 0 ] || [ "${aborted:-0}" != 0 ] || [ "${failed:-0}" != 0 ] || [ -z "$tps" ]; }; then
    log "smoke: $name via $target failed: ${first:-see $err}"; SMOKE_FAIL=1
  fi
  if [ "$inst" = routed ] && [ "$MODE" = smoke ] && [ $((rp1 - rp0)) -le 0 ]; then
    log "smoke: $name via the routed pgbalancer: the replica used no CPU, so it served no reads"; SMOKE_FAIL=1
  fi
}

start_routed
log "pgbench: ${#WORKLOADS[@]} workloads x ${#TARGETS[@]} targets x $ROUNDS rounds x ${DURATION}s, interleaved"
for w in "${WORKLOADS[@]}"; do
  IFS='|' read -r name clients args _desc <<<"$w"
  for round in $(seq 1 "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
      run_pgbench "$name" "$clients" "$args" "$target" "$round"
    done
  done
done

# A pooler that died under load is a failure in every mode.
for pooler in "${POOLERS[@]}" routed; do
  pid=$(pid_of "$pooler")
  kill -0 "$pid" 2>/dev/null || { log "$pooler (pid $pid) is gone"; SMOKE_FAIL=1; }
done

if [ "$MODE" = smoke ]; then
  column -s, -t "$RESULTS" >&2 || cat "$RESULTS" >&2
  [ "$SMOKE_FAIL" = 0 ] || die "smoke: see the lines above"
  log "smoke: OK"
  exit 0
fi

# ----------------------------------------------------------------- user-space instructions (callgrind)
# Deterministic where tps is not: each pooler runs under callgrind for two
# lengths of the same pgbench run (-S, 4 clients); the difference of the
# instruction counts divided by the difference of transactions is what one
# transaction costs in user space, start-up and connections excluded.
INSTR=$WORK/instructions.csv
echo "pooler,workload,instructions_per_tx" >"$INSTR"
callgrind_total() { # pooler transactions-per-client pgbench-args -> instructions of the whole run
  local pooler=$1 per=$2 args=$3 out=$WORK/callgrind.$1.$2.out port vpid
  port=$(port_of "$pooler")
  if [ "$pooler" != pgbouncer ]; then
    local cfg=$WORK/pgbalancer.yml; [ "$pooler" = routed ] && cfg=$WORK/pgbalancer-routed.yml
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BAL_BIN" --config "$cfg" \
      >>"$WORK/callgrind.log" 2>&1 &
    vpid=$!; BAL_PID=$vpid
  else
    rm -f "$WORK/bouncer/pgbouncer.pid"; touch "$out"; chown postgres: "$out"
    runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$out" pgbouncer "$WORK/bouncer/pgbouncer.ini" \
      >>"$WORK/callgrind.log" 2>&1 &
    BOUNCER_WRAPPER=$!
  fi
  # Slow to start under valgrind: up to 60 s.
  for _ in $(seq 1 600); do
    psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -Atc 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  if [ "$pooler" = pgbouncer ]; then vpid=$(cat "$WORK/bouncer/pgbouncer.pid"); BOUNCER_PID=$vpid; fi
  # shellcheck disable=SC2086
  pgbench -n -h 127.0.0.1 -p "$port" -U postgres -t "$per" -c 4 -j 1 $args bench >>"$WORK/callgrind.log" 2>&1 ||
    die "pgbench under callgrind ($pooler)"
  kill -INT "$vpid"
  for _ in $(seq 1 150); do kill -0 "$vpid" 2>/dev/null || break; sleep 0.2; done
  wait "$vpid" 2>/dev/null || true
  BAL_PID=""; BOUNCER_PID=""; BOUNCER_WRAPPER=""
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}
if [ "$MODE" != smoke ]; then
  stop_pgbalancer; stop_routed; stop_pgbouncer
  # `routed`: pgbalancer with the replica as a second backend (reads spread over both).
  for pooler in "${POOLERS[@]}" routed; do
    for spec in "select-c4|-S" "prepared-c4|-S -M prepared"; do
      IFS='|' read -r wl args <<<"$spec"
      # PgBouncer before 1.21 cannot run -M prepared in transaction mode (see below).
      [ "$pooler" = pgbouncer ] && [ "$wl" = prepared-c4 ] && [ "${PREPARED_LINE#max_}" = "$PREPARED_LINE" ] && continue
      short=$(callgrind_total "$pooler" 250 "$args"); long=$(callgrind_total "$pooler" 1250 "$args")
      per_tx=$(( (long - short) / (4 * 1000) ))
      log "callgrind: $pooler $wl: $per_tx user-space instructions per transaction"
      echo "$pooler,$wl,$per_tx" >>"$INSTR"
    done
  done
fi

# ----------------------------------------------------------------- report
OUT=$BENCH_DIR/results
mkdir -p "$OUT"
cp "$RESULTS" "$OUT/pgbench.csv"; cp "$MEMORY" "$OUT/memory.csv"; cp "$INSTR" "$OUT/instructions.csv"
for f in pgbalancer.log pgbalancer-routed.log pgbouncer.log; do tail -n 200 "$WORK/$f" >"$OUT/$f" 2>/dev/null || true; done
{
  echo "mode=$MODE"; echo "rounds=$ROUNDS"; echo "duration=$DURATION"; echo "scale=$SCALE"; echo "idle=$IDLE"
  echo "pool_size=$POOL_SIZE"; echo "nproc=$(nproc)"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "mem_gib=$(awk '/^MemTotal:/ {printf "%.1f", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"; echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "pg_version=$PGVERSION"; echo "pgbench_version=$(pgbench --version | awk '{print $3}')"
  echo "bouncer_version=$BOUNCER_VERSION"
  echo "pgbalancer_version=$("$BAL_BIN" --version | awk '{print $2}')"
  echo "pgbalancer_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- crates src 2>/dev/null || echo '+dirty')"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/meta.txt"
cp "$WORK/workloads.txt" "$OUT/workloads.txt"
python3 "$BENCH_DIR/report.py" --results "$OUT" --template "$BENCH_DIR/benchmarks.md.in" --doc "$ROOT/docs/benchmarks.md"
log "wrote docs/benchmarks.md and benches/results/"
