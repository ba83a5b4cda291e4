#!/usr/bin/env python3
"""Turn benches/run.sh results into docs/benchmarks.md and PNG charts.

Reads RESULTS/{pgbench.csv,memory.csv,meta.txt,workloads.txt}, writes
RESULTS/summary.csv, RESULTS/*.png (gnuplot) and the doc, filled in from
benches/benchmarks.md.in ({{NAME}} placeholders). Standard library only.
"""
import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys

TARGETS = ["direct", "pgbouncer", "pgbalancer"]
LABEL = {"direct": "direct", "pgbouncer": "PgBouncer", "pgbalancer": "pgbalancer"}


def load(results):
    meta = {}
    with open(os.path.join(results, "meta.txt")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    workloads = []
    with open(os.path.join(results, "workloads.txt")) as f:
        for line in f:
            if line.strip():
                name, clients, args, desc = line.rstrip("\n").split("|", 3)
                workloads.append({"name": name, "clients": int(clients), "args": args, "desc": desc})
    with open(os.path.join(results, "pgbench.csv")) as f:
        runs = list(csv.DictReader(f))
    with open(os.path.join(results, "memory.csv")) as f:
        memory = list(csv.DictReader(f))
    instr = []
    path = os.path.join(results, "instructions.csv")
    if os.path.exists(path):
        with open(path) as f:
            instr = list(csv.DictReader(f))
    return meta, workloads, runs, memory, instr


def fnum(x, default=0.0):
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


def summarize(workloads, runs):
    """{workload: {target: {...}}} with medians over rounds."""
    out = {}
    for w in workloads:
        out[w["name"]] = {}
        for t in TARGETS:
            rs = [r for r in runs if r["workload"] == w["name"] and r["target"] == t]
            if not rs:
                continue
            tps = [fnum(r["tps"]) for r in rs]
            lat = [fnum(r["latency_ms"], None) for r in rs if r["latency_ms"]]
            errors = [r["first_error"] for r in rs if r["first_error"]]

            def cpu(col):
                xs = [fnum(r.get(col), None) for r in rs if r.get(col)]
                xs = [x for x in xs if x is not None]
                return statistics.median(xs) if xs else None
            out[w["name"]][t] = {
                "tps": statistics.median(tps),
                "tps_min": min(tps),
                "tps_max": max(tps),
                "lat": statistics.median(lat) if lat else None,
                "rounds": len(rs),
                "aborted": sum(int(fnum(r["aborted_clients"])) for r in rs),
                "failed": sum(int(fnum(r["failed_tx"])) for r in rs),
                "processed": sum(int(fnum(r["processed"])) for r in rs),
                "bad_exit": sum(1 for r in rs if r["exit_code"] not in ("0", "")),
                "error": errors[0] if errors else "",
                "cpu_user": cpu("pooler_user_us"),
                "cpu_sys": cpu("pooler_sys_us"),
                "cpu_pg": cpu("postgres_us"),
                "cpu_machine": cpu("machine_us"),
                "cpu_replica": cpu("replica_us"),
            }
            st = out[w["name"]][t]
            # pgbench aborts a client at its first error: the tps of the survivors (often a single
            # client) is not comparable, so a run with aborted clients has no throughput.
            st["all_aborted"] = st["aborted"] > 0
            if st["all_aborted"]:
                st["tps"] = st["tps_min"] = st["tps_max"] = float("nan")
    return out


def ratio(a, b):
    return a / b if b else float("nan")


def fmt_ratio(x):
    return "—" if x != x else "%.2f×" % x


def fmt_tps(s):
    if s is None:
        return "—"
    if s.get("all_aborted"):
        return "— (clients aborted)"
    txt = "{:,.0f}".format(s["tps"])
    if s["rounds"] > 1:
        txt += " <sub>({:,.0f}–{:,.0f})</sub>".format(s["tps_min"], s["tps_max"])
    return txt


def failures(s, clients):
    if s is None:
        return "—"
    parts = []
    if s["aborted"]:
        parts.append("%d of %d clients aborted (after %d tx in all)" % (s["aborted"], clients * s["rounds"],
                                                                         s["processed"]))
    if s["failed"]:
        parts.append("%d failed tx" % s["failed"])
    if s["bad_exit"] and not parts:
        parts.append("pgbench exit ≠ 0 in %d run(s)" % s["bad_exit"])
    return ", ".join(parts) if parts else "0"


def failures_cell(clients, d, b, p):
    cells = [(LABEL[t], failures(x, clients)) for t, x in zip(TARGETS, (d, b, p)) if x is not None]
    if all(c == "0" for _, c in cells):
        return "0"
    return "; ".join("%s: %s" % (n, c) for n, c in cells if c != "0")


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value, target, higher_is_better=True):
    if value != value:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "**met**"
    if higher_is_better:
        return "**missed** by %.0f%% (%.2f of %.2f)" % ((1 - value / target) * 100, value, target)
    return "**missed** by %.0f%%" % ((value / target - 1) * 100)


def chart(results, workloads, summ):
    gp = shutil.which("gnuplot")
    if not gp:
        print("report.py: gnuplot not found, no charts", file=sys.stderr)
        return []
    made = []
    dat = os.path.join(results, "tps_by_workload.dat")
    with open(dat, "w") as f:
        f.write("# workload direct pgbouncer pgbalancer (workloads where a pooler had no throughput are left out)\n")
        for w in workloads:
            s = summ[w["name"]]
            if any(x.get("all_aborted") for x in s.values()):
                continue
            f.write('"%s" %s\n' % (w["name"], " ".join("%.1f" % s[t]["tps"] if t in s and s[t]["tps"] == s[t]["tps"] else "NaN" for t in TARGETS)))
    sel = [w for w in workloads if re.fullmatch(r"select-c\d+", w["name"])]
    dat2 = os.path.join(results, "tps_by_clients.dat")
    with open(dat2, "w") as f:
        f.write("# clients direct pgbouncer pgbalancer\n")
        for w in sorted(sel, key=lambda w: w["clients"]):
            s = summ[w["name"]]
            f.write("%d %s\n" % (w["clients"], " ".join("%.1f" % s[t]["tps"] if t in s and s[t]["tps"] == s[t]["tps"] else "NaN" for t in TARGETS)))
    script = """
set terminal pngcairo size 1000,520 font "sans,10"
set datafile missing "NaN"
set output "{out1}"
set title "pgbench tps by workload (median of rounds; higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "transactions per second"
set yrange [0:*]
set grid ytics
set key top right
set xtics rotate by -20
plot "{dat}" using 2:xtic(1) title "direct" lc rgb "#888888", \\
     "" using 3 title "PgBouncer" lc rgb "#3b75af", \\
     "" using 4 title "pgbalancer" lc rgb "#e1812c"
unset style
set output "{out2}"
set title "pgbench -S tps by client count (median of rounds; higher is better)"
set style data linespoints
set logscale x 2
set xtics rotate by 0
set xlabel "clients (-c)"
set xrange [0.8:*]
plot "{dat2}" using 1:2 title "direct" lw 2 pt 7 lc rgb "#888888", \\
     "" using 1:3 title "PgBouncer" lw 2 pt 7 lc rgb "#3b75af", \\
     "" using 1:4 title "pgbalancer" lw 2 pt 7 lc rgb "#e1812c"
"""
    out1 = os.path.join(results, "tps_by_workload.png")
    out2 = os.path.join(results, "tps_by_clients.png")
    r = subprocess.run([gp], input=script.format(out1=out1, out2=out2, dat=dat, dat2=dat2), text=True,
                       capture_output=True)
    if r.returncode != 0:
        print("report.py: gnuplot failed:\n" + r.stderr, file=sys.stderr)
        return []
    made += [out1, out2]
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--template", required=True)
    ap.add_argument("--doc", required=True)
    a = ap.parse_args()
    meta, workloads, runs, memory, instr = load(a.results)
    summ = summarize(workloads, runs)
    have_bouncer = any(r["target"] == "pgbouncer" for r in runs)

    # summary.csv
    with open(os.path.join(a.results, "summary.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["workload", "target", "median_tps", "min_tps", "max_tps", "median_latency_ms", "rounds",
                     "aborted_clients", "failed_tx"])
        for w in workloads:
            for t, s in summ[w["name"]].items():
                wr.writerow([w["name"], t, "%.1f" % s["tps"], "%.1f" % s["tps_min"], "%.1f" % s["tps_max"],
                             "" if s["lat"] is None else "%.3f" % s["lat"], s["rounds"], s["aborted"], s["failed"]])

    # throughput table
    rows = []
    for w in workloads:
        s = summ[w["name"]]
        d, b, p = s.get("direct"), s.get("pgbouncer"), s.get("pgbalancer")
        rows.append([
            "`%s`" % w["name"], w["desc"],
            fmt_tps(d), fmt_tps(b), fmt_tps(p),
            fmt_ratio(ratio(p["tps"], b["tps"])) if p and b else "—",
            fmt_ratio(ratio(p["tps"], d["tps"])) if p and d else "—",
            fmt_ratio(ratio(b["tps"], d["tps"])) if b and d else "—",
            failures_cell(w["clients"], d, b, p),
        ])
    tps_table = md_table(["workload", "what", "direct tps", "PgBouncer tps", "pgbalancer tps",
                          "pgbalancer / PgBouncer", "pgbalancer / direct", "PgBouncer / direct",
                          "failures"], rows)

    # latency table (pgbench "latency average")
    lrows = []
    for w in workloads:
        s = summ[w["name"]]
        d = s.get("direct")
        cells = []
        for t in TARGETS:
            x = s.get(t)
            if x is None or x["lat"] is None or x.get("all_aborted"):
                cells.append("—")
            elif t == "direct" or d is None or d["lat"] is None:
                cells.append("%.3f" % x["lat"])
            else:
                cells.append("%.3f (%+.0f µs)" % (x["lat"], (x["lat"] - d["lat"]) * 1000))
        lrows.append(["`%s`" % w["name"]] + cells)
    lat_table = md_table(["workload", "direct ms", "PgBouncer ms (added)", "pgbalancer ms (added)"], lrows)

    # CPU per transaction (µs, medians over rounds)
    def us(x):
        return "—" if x is None else "%.1f" % x

    crows = []
    for w in workloads:
        s = summ[w["name"]]
        if not any(s.get(t, {}).get("cpu_machine") is not None for t in TARGETS):
            continue

        def get(t, key):
            x = s.get(t)
            return None if x is None or x.get("all_aborted") else x.get(key)

        def pooler(t):
            u, k = get(t, "cpu_user"), get(t, "cpu_sys")
            return "—" if u is None or k is None else "%s <sub>(%s + %s)</sub>" % (us(u + k), us(u), us(k))

        crows.append(["`%s`" % w["name"], pooler("pgbouncer"), pooler("pgbalancer")]
                     + [us(get(t, "cpu_pg")) for t in TARGETS] + [us(get(t, "cpu_machine")) for t in TARGETS])
    cpu_table = md_table(["workload", "PgBouncer <sub>(user + kernel)</sub>", "pgbalancer <sub>(user + kernel)</sub>",
                          "PostgreSQL: direct", "PostgreSQL: via PgBouncer", "PostgreSQL: via pgbalancer",
                          "machine: direct", "machine: via PgBouncer", "machine: via pgbalancer"],
                         crows) if crows else "_(no CPU accounting in these results)_"

    # The CPU budget behind the -S -c50 target, from this run's accounting.
    def budget_note():
        s = summ.get("select-c50", {})
        b, p = s.get("pgbouncer"), s.get("pgbalancer")
        nproc = fnum(meta.get("nproc"), 0)
        if not (b and p and nproc) or any(x is None for x in (b["cpu_machine"], p["cpu_machine"], p["cpu_user"],
                                                              b["cpu_user"])):
            return "_(no CPU accounting for `select-c50` in these results)_"
        goal = 1.25 * b["tps"]
        per_tx = nproc * 1e6 / goal
        bal = p["cpu_user"] + p["cpu_sys"]
        bnc = b["cpu_user"] + b["cpu_sys"]
        others = p["cpu_machine"] - bal
        left = per_tx - others
        return (
            "In this run, `select-c50` through pgbalancer used %.1f µs of machine CPU per transaction, "
            "%.1f µs of it in pgbalancer (%.1f user + %.1f kernel) and %.1f µs elsewhere (PostgreSQL %.1f, "
            "the rest pgbench and the kernel's own threads); PgBouncer used %.1f µs (%.1f user + %.1f kernel). "
            "1.25× PgBouncer's %s tps is %s tps; with all %d CPUs busy that allows %.1f µs of CPU per "
            "transaction in all, so with the rest of the machine's cost unchanged the pooler would have "
            "**%.1f µs** per transaction, against PgBouncer's %.1f µs for the same four socket calls "
            "(read the client, write the server, read the server, write the client)%s"
            % (p["cpu_machine"], bal, p["cpu_user"], p["cpu_sys"], others, p["cpu_pg"] or float("nan"),
               bnc, b["cpu_user"], b["cpu_sys"], "{:,.0f}".format(b["tps"]), "{:,.0f}".format(goal), nproc,
               per_tx, left, bnc,
               (": less than the kernel time alone of those calls (%.1f µs in PgBouncer, %.1f in pgbalancer), "
                "so no pooler could reach the goal here, whatever its user-space code costs."
                % (b["cpu_sys"], p["cpu_sys"])) if left < min(b["cpu_sys"], p["cpu_sys"]) else "."))

    # Read routing: the `routed-*` workloads, where pgbalancer has the replica as a second backend.
    def routing_note():
        lines = []
        for w in workloads:
            if not w["name"].startswith("routed-"):
                continue
            s = summ[w["name"]]
            d, b, p = s.get("direct"), s.get("pgbouncer"), s.get("pgbalancer")
            if not p or p.get("all_aborted"):
                lines.append("- `%s`: pgbalancer had no throughput (see the errors above)." % w["name"])
                continue
            base = summ.get(w["name"][len("routed-"):], {}).get("pgbalancer")
            txt = "- `%s`: pgbalancer spreading the reads, %s tps" % (w["name"], "{:,.0f}".format(p["tps"]))
            if b and not b.get("all_aborted"):
                txt += " = %s PgBouncer's %s on the primary alone" % (fmt_ratio(ratio(p["tps"], b["tps"])),
                                                                     "{:,.0f}".format(b["tps"]))
            if d:
                txt += " and %s direct" % fmt_ratio(ratio(p["tps"], d["tps"]))
            if base and not base.get("all_aborted"):
                txt += " (pgbalancer with the primary only, `%s` above: %s tps)" % (
                    w["name"][len("routed-"):], "{:,.0f}".format(base["tps"]))
            txt += ". "
            if p["cpu_replica"] is not None and p["cpu_pg"]:
                txt += ("The replica used %.1f of the %.1f µs of PostgreSQL CPU per transaction (%.0f %%), "
                        "so it served its share of the reads" % (p["cpu_replica"], p["cpu_pg"],
                                                                  100 * p["cpu_replica"] / p["cpu_pg"]))
                if d and d["cpu_replica"] is not None:
                    txt += "; with direct clients on the primary it used %.1f µs (streaming, idle)" % d["cpu_replica"]
                txt += "."
            lines.append(txt)
        return "\n".join(lines) if lines else "_(no `routed-*` workload in this run)_"

    # user-space instructions per transaction (callgrind)
    irows = []
    for wl in sorted({r["workload"] for r in instr}):
        got = {r["pooler"]: fnum(r["instructions_per_tx"], None) for r in instr if r["workload"] == wl}
        b, p, r = got.get("pgbouncer"), got.get("pgbalancer"), got.get("routed")
        irows.append(["`%s`" % wl, "{:,.0f}".format(b) if b else "— (not run)", "{:,.0f}".format(p) if p else "—",
                      fmt_ratio(ratio(p, b)) if b and p else "—", "{:,.0f}".format(r) if r else "—"])
    instr_table = md_table(["workload", "PgBouncer", "pgbalancer", "pgbalancer / PgBouncer",
                            "pgbalancer routing over primary + replica"], irows) \
        if irows else "_(callgrind was not run for these results)_"

    # errors seen
    errs = []
    for w in workloads:
        for t in TARGETS:
            s = summ[w["name"]].get(t)
            if s and s["error"] and (s["aborted"] or s["failed"] or s["bad_exit"]):
                errs.append("- `%s` via %s: `%s`" % (w["name"], LABEL[t], s["error"].strip()))
    errors_md = "\n".join(errs) if errs else "None: every run finished with 0 failed transactions and no aborted client."

    # memory
    mem = {m["pooler"]: m for m in memory}
    mrows = []
    for m in memory:
        mrows.append([LABEL.get(m["pooler"], m["pooler"]), m["clients"], m["connected"], m["alive"],
                      "{:,}".format(int(m["rss_before_kib"])), "{:,}".format(int(m["rss_after_kib"])),
                      "{:,}".format(int(m["bytes_per_client"])), m["connect_seconds"]])
    mem_table = md_table(["pooler", "idle clients asked", "connected", "still open at the end",
                          "VmRSS before (KiB)", "VmRSS with clients (KiB)", "RSS per idle client (bytes)",
                          "time to connect all (s)"], mrows)

    # targets
    def tps(wl, t):
        s = summ.get(wl, {}).get(t)
        return s["tps"] if s else float("nan")

    def lat(wl, t):
        s = summ.get(wl, {}).get(t)
        return s["lat"] if s and s["lat"] is not None else float("nan")

    r1 = ratio(tps("select-c50", "pgbalancer"), tps("select-c50", "pgbouncer"))
    r2 = ratio(tps("select-c50", "pgbalancer"), tps("select-c50", "direct"))
    r3 = ratio(tps("connect-c20", "pgbalancer"), tps("connect-c20", "pgbouncer"))
    add_bal = (lat("select-c1", "pgbalancer") - lat("select-c1", "direct")) * 1000
    add_bnc = (lat("select-c1", "pgbouncer") - lat("select-c1", "direct")) * 1000
    rss_bal = fnum(mem.get("pgbalancer", {}).get("bytes_per_client"), float("nan"))
    rss_bnc = fnum(mem.get("pgbouncer", {}).get("bytes_per_client"), float("nan"))

    def lat_verdict():
        if add_bal != add_bal or add_bnc != add_bnc:
            return "not measured"
        if add_bal <= add_bnc:
            return "**met**"
        return "**missed** by %.0f µs per transaction (%.0f%% more added latency)" % (
            add_bal - add_bnc, (add_bal / add_bnc - 1) * 100 if add_bnc > 0 else float("inf"))

    def rss_verdict():
        if rss_bal != rss_bal or rss_bnc != rss_bnc:
            return "not measured"
        if rss_bal <= rss_bnc:
            return "**met**"
        return "**missed**: %.1f× PgBouncer's (%+.0f bytes per client)" % (
            rss_bal / rss_bnc if rss_bnc > 0 else float("inf"), rss_bal - rss_bnc)

    def prepared_row():
        s = summ.get("prepared-c50", {})
        b, p = s.get("pgbouncer"), s.get("pgbalancer")
        if not p:
            return ["`-S -M prepared -c50`, transaction mode", "0 errors and ≥ 1.25× PgBouncer", "—", "not measured"]
        errors = p["aborted"] + p["failed"] + p["bad_exit"]
        mine = "pgbalancer {:,.0f} tps, {} errors".format(p["tps"], errors) if not p.get("all_aborted") else \
            "pgbalancer: clients aborted"
        if errors:
            return ["`-S -M prepared -c50`, transaction mode", "0 errors and ≥ 1.25× PgBouncer", mine, "**missed**"]
        if b and b.get("all_aborted"):
            return ["`-S -M prepared -c50`, transaction mode", "0 errors and ≥ 1.25× PgBouncer",
                    mine + "; PgBouncer %s: clients aborted" % meta.get("bouncer_version"),
                    "**met**: 0 errors; PgBouncer cannot run it, so there is no ratio"]
        rp = ratio(p["tps"], b["tps"]) if b else float("nan")
        return ["`-S -M prepared -c50`, transaction mode", "0 errors and ≥ 1.25× PgBouncer",
                mine + ", " + fmt_ratio(rp), verdict(rp, 1.25)]

    mem_bal = mem.get("pgbalancer", {})
    held = "%s of %s idle clients held" % (mem_bal.get("alive", "—"), mem_bal.get("clients", "—"))

    trows = [
        ["`-S -c50`, transaction mode", "≥ 1.25× PgBouncer", fmt_ratio(r1), verdict(r1, 1.25)],
        ["`-S -c50`, transaction mode", "≥ 0.70× direct",
         "%s (PgBouncer: %s)" % (fmt_ratio(r2), fmt_ratio(ratio(tps("select-c50", "pgbouncer"), tps("select-c50", "direct")))),
         verdict(r2, 0.70)],
        prepared_row(),
        ["`-S -C -c20` (connect per transaction)", "≥ 1.2× PgBouncer", fmt_ratio(r3), verdict(r3, 1.2)],
        ["1 client (`-S -c1`), added latency over direct", "≤ PgBouncer's",
         "pgbalancer %+.0f µs, PgBouncer %+.0f µs" % (add_bal, add_bnc), lat_verdict()],
        ["10,000 idle clients; RSS per idle client connection", "all held; ≤ PgBouncer's",
         held + "; pgbalancer %s B, PgBouncer %s B" % ("{:,.0f}".format(rss_bal) if rss_bal == rss_bal else "—",
                                             "{:,.0f}".format(rss_bnc) if rss_bnc == rss_bnc else "—"),
         rss_verdict()],
    ]
    targets_table = md_table(["target", "goal", "measured", "verdict"], trows)

    commands = []
    for w in workloads:
        jobs = 1 if w["clients"] < 2 else 2
        commands.append("pgbench -n -h 127.0.0.1 -p $PORT -U postgres -T %s -c %d -j %d %sbench   # %s" % (
            meta.get("duration"), w["clients"], jobs, (w["args"] + " ") if w["args"] else "", w["name"]))

    charts = chart(a.results, workloads, summ)
    docdir = os.path.dirname(os.path.abspath(a.doc))
    chart_md = "\n\n".join("![%s](%s)" % (os.path.basename(c)[:-4].replace("_", " "), os.path.relpath(c, docdir))
                           for c in charts) or "_(gnuplot not available: no charts)_"

    mode_note = {
        "full": "full mode: %s interleaved rounds of %s s per workload and target" % (meta["rounds"], meta["duration"]),
        "quick": "**quick mode**: %s round of %s s per workload and target — indicative only; "
                 "run `benches/run.sh` (3 rounds of 10 s) for numbers to quote" % (meta["rounds"], meta["duration"]),
    }.get(meta["mode"], meta["mode"])

    values = dict(meta)
    values.update({
        "MODE_NOTE": mode_note,
        "TPS_TABLE": tps_table,
        "LATENCY_TABLE": lat_table,
        "CPU_TABLE": cpu_table,
        "INSTR_TABLE": instr_table,
        "BUDGET_NOTE": budget_note(),
        "ROUTING_NOTE": routing_note(),
        "ERRORS": errors_md,
        "MEMORY_TABLE": mem_table,
        "TARGETS_TABLE": targets_table,
        "CHARTS": chart_md,
        "PGBENCH_COMMANDS": "\n".join(commands),
        "BOUNCER_NOTE": "" if have_bouncer else "\n> PgBouncer was not installed for this run.\n",
        "PREPARED_BOUNCER": ("PgBouncer %s supports `max_prepared_statements` and has it set to 200"
                             % meta["bouncer_version"]) if meta.get("bouncer_version", "none") != "none" and
        [int(x) for x in meta["bouncer_version"].split(".")[:2]] >= [1, 21] else
        ("PgBouncer %s predates `max_prepared_statements` (added in 1.21), so it cannot keep "
         "protocol-level prepared statements in transaction mode either" % meta.get("bouncer_version")),
    })
    with open(a.template) as f:
        text = f.read()

    def sub(m):
        key = m.group(1)
        if key not in values:
            raise SystemExit("report.py: template placeholder {{%s}} has no value" % key)
        return str(values[key])

    text = re.sub(r"\{\{([A-Za-z_0-9]+)\}\}", sub, text)
    with open(a.doc, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
