//! Time per statement of the read/write classifier: over the whole corpus of
//! `tests/classify_corpus.rs` (each case with its configured classifier) and for a few typical
//! statements, next to the bare lexer as a baseline.
//!
//! `cargo bench -p pgbalancer-proxy --bench classify -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgbalancer_proxy::sql::classify::Classifier;
use pgbalancer_proxy::sql::lexer::Lexer;

#[path = "../src/sql/classify_corpus.rs"]
mod corpus;

const TYPICAL: &[(&str, &str)] = &[
    ("pgbench_select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
    ("pgbench_update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"),
    ("begin", "BEGIN"),
    (
        "orm_select",
        "SELECT \"users\".\"id\", \"users\".\"email\", \"users\".\"created_at\" FROM \"users\" \
         WHERE \"users\".\"id\" = $1 AND \"users\".\"deleted_at\" IS NULL LIMIT $2",
    ),
    (
        "join_with_functions",
        "SELECT o.id, lower(c.name), count(*), coalesce(sum(l.qty), 0) FROM orders o \
         JOIN customers c ON c.id = o.customer_id LEFT JOIN lines l ON l.order_id = o.id \
         WHERE o.created_at > now() - interval '7 days' GROUP BY o.id, c.name ORDER BY o.id DESC LIMIT 50",
    ),
    ("cte_write", "WITH d AS (DELETE FROM queue WHERE id = $1 RETURNING *) SELECT * FROM d"),
    ("select_for_update", "SELECT * FROM jobs WHERE state = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"),
];

fn classify(c: &mut Criterion) {
    let corpus = corpus::load();
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(corpus.cases.len() as u64));
    group.bench_function("corpus", |b| {
        b.iter(|| {
            for case in &corpus.cases {
                black_box(corpus.classifiers[case.classifier].classify(black_box(&case.sql)));
            }
        })
    });
    group.bench_function("corpus_lexer_only", |b| {
        b.iter(|| {
            for case in &corpus.cases {
                black_box(Lexer::new(black_box(&case.sql)).count());
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    let default = Classifier::default();
    let strict = Classifier::new(&["audit_log".into()], &["my_pure_fn".into()]);
    for (name, sql) in TYPICAL {
        group.bench_function(*name, |b| b.iter(|| default.classify(black_box(sql))));
    }
    let (_, select) = TYPICAL[0];
    group.bench_function("pgbench_select_lexer_only", |b| b.iter(|| Lexer::new(black_box(select)).count()));
    let (_, join) = TYPICAL[4];
    group.bench_function("join_with_functions_lexer_only", |b| b.iter(|| Lexer::new(black_box(join)).count()));
    group.bench_function("join_with_functions_strict", |b| b.iter(|| strict.classify(black_box(join))));
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
