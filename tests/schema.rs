//! Migrations, native daily partitions, the hourly rollup and retention, on a
//! real PostgreSQL (the native path; TimescaleDB is not installable here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::TestEnv;
use palisade_core::model::{Decoded, Metric};
use palisade_core::store::{Batch, Position, Store};
use palisade_schema::{Maintenance, Retention, TimeseriesMode};

fn metric(ts: chrono::DateTime<Utc>, value: f64) -> Metric {
    Metric {
        ts,
        host: "proxmox-node-01".into(),
        name: "cpu.usage_percent".into(),
        value,
        labels: serde_json::Map::new(),
        agent_id: Some("edge-1".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_once() {
    let env = TestEnv::new("migrate").await;
    let other = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let (a, b) = tokio::join!(
        palisade_schema::migrate(&env.pool),
        palisade_schema::migrate(&other)
    );
    assert_eq!(a.unwrap(), TimeseriesMode::Native);
    assert_eq!(b.unwrap(), TimeseriesMode::Native);
    let applied = env
        .count("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .await;
    assert_eq!(applied, palisade_schema::MIGRATOR.iter().count() as i64);
    // Partitioned, not plain, tables.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid
                   WHERE c.relname IN ('events', 'metrics', 'connections')"
        )
        .await,
        3
    );
    other.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_create_a_new_day_once() {
    let env = TestEnv::new("partition_race").await;
    palisade_schema::migrate(&env.pool).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&env.database_url)
        .await
        .unwrap();
    let days = [chrono::NaiveDate::from_ymd_opt(2021, 3, 4).unwrap()];
    let calls = (0..8).map(|_| palisade_schema::ensure_partitions(&pool, "events", &days));
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(
        env.count("SELECT count(*) FROM pg_class WHERE relname = 'events_p20210304'")
            .await,
        1
    );
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_rollup_and_retention() {
    let env = TestEnv::new("maintenance").await;
    palisade_schema::migrate(&env.pool).await.unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 30, 0).unwrap();
    let maintenance = Maintenance::new(Retention {
        events_days: Some(90),
        ..Retention::default()
    });

    let report = maintenance.run_once(&env.pool, now).await.unwrap();
    assert_eq!(
        report.partitions_created,
        3 * 4,
        "today and 3 days ahead for 3 tables"
    );
    for name in [
        "events_p20261124",
        "metrics_p20261127",
        "connections_p20261125",
    ] {
        assert_eq!(
            env.count(&format!(
                "SELECT count(*) FROM pg_class WHERE relname = '{name}'"
            ))
            .await,
            1
        );
    }
    assert_eq!(
        maintenance
            .run_once(&env.pool, now)
            .await
            .unwrap()
            .partitions_created,
        0
    );

    // Samples 40 days old and this morning; the writer creates the old day's partition itself.
    let store = Store::new(env.pool.clone());
    let old = now - Duration::days(40);
    let samples = vec![
        metric(old, 1.0),
        metric(now - Duration::minutes(20), 10.0),
        metric(now - Duration::minutes(10), 30.0),
    ];
    let batch = Batch {
        records: vec![(
            Position {
                stream: "PALISADE_TELEMETRY".into(),
                seq: 1,
                subject: "telemetry.metrics.edge".into(),
            },
            Decoded::Metrics(samples),
        )],
        dead_letters: vec![],
    };
    store.write_batch("metrics", 0, &batch).await.unwrap();
    assert_eq!(env.count("SELECT count(*) FROM metrics_p20261015").await, 1);

    let report = maintenance.run_once(&env.pool, now).await.unwrap();
    assert_eq!(report.hours_rolled_up, 2);
    assert_eq!(
        report.partitions_dropped,
        vec!["metrics_p20261015".to_owned()]
    );
    assert_eq!(env.count("SELECT count(*) FROM metrics").await, 2);
    let (samples, avg, max): (i64, f64, f64) = sqlx::query_as(
        "SELECT samples, avg_value, max_value FROM metrics_hourly WHERE bucket = '2026-11-24 12:00:00+00'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((samples, avg, max), (2, 20.0, 30.0));
    // The old hour's rollup outlives its raw samples (rollups are kept 400 days).
    assert_eq!(env.count("SELECT count(*) FROM metrics_hourly").await, 2);

    // A late sample for a rolled-up hour marks it again, and the next pass recomputes it.
    let late = Batch {
        records: vec![(
            Position {
                stream: "PALISADE_TELEMETRY".into(),
                seq: 2,
                subject: "telemetry.metrics.edge".into(),
            },
            Decoded::Metrics(vec![metric(now - Duration::minutes(5), 50.0)]),
        )],
        dead_letters: vec![],
    };
    store.write_batch("metrics", 0, &late).await.unwrap();
    maintenance.run_once(&env.pool, now).await.unwrap();
    let avg: f64 = sqlx::query_scalar(
        "SELECT avg_value FROM metrics_hourly WHERE bucket = '2026-11-24 12:00:00+00'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(avg, 30.0);

    // Events are kept unless a retention is configured; here 90 days.
    let far = now + Duration::days(400);
    let report = maintenance.run_once(&env.pool, far).await.unwrap();
    assert!(
        report
            .partitions_dropped
            .contains(&"events_p20261124".to_owned()),
        "{report:?}"
    );
    assert!(report.rollup_rows_deleted >= 2);
    env.cleanup().await;
}

/// Applies the migrations up to and including `last` (a file name), as an older
/// Palisade did.
async fn migrate_until(env: &TestEnv, last: &str) {
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/migrations");
    let before = std::env::temp_dir().join(format!("palisade-migrations-{}", env.namespace));
    std::fs::create_dir_all(&before).unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() <= last {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&env.pool)
        .await
        .unwrap();
    std::fs::remove_dir_all(&before).unwrap();
}

/// Vectors stored before migration 0017 get their event's host, type and severity
/// from its row; one whose event row is not there keeps none (it matches no such
/// filter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_before_0017_get_their_events_labels() {
    let env = TestEnv::new("vectors_0017").await;
    migrate_until(&env, "0016_embedding_generations.sql").await;
    let ts = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    palisade_schema::ensure_partitions(&env.pool, "events", &[ts.date_naive()])
        .await
        .unwrap();
    let (with_row, without_row) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
    sqlx::query(
        "INSERT INTO events (ts, id, host, source, type, severity, severity_level, rule, \
             message, attributes, subject, stream, stream_seq) \
         VALUES ($1, $2, 'web-01', 'syscall', 'falco_alert', 'high', 3, 'Terminal shell', \
             'a shell', '{}', 'falco.events', 'PALISADE_SECURITY', 1)",
    )
    .bind(ts)
    .bind(with_row)
    .execute(&env.pool)
    .await
    .unwrap();
    for (id, key) in [(with_row, 1u8), (without_row, 2)] {
        sqlx::query("INSERT INTO event_vectors (event_id, ts, text_key) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(ts)
            .bind(vec![key; 32])
            .execute(&env.pool)
            .await
            .unwrap();
    }
    palisade_schema::migrate(&env.pool).await.unwrap();

    let labels = |id: uuid::Uuid| {
        sqlx::query_as::<_, (Option<String>, Option<String>, Option<i16>)>(
            "SELECT host, type, severity_level FROM event_vectors WHERE event_id = $1",
        )
        .bind(id)
        .fetch_one(&env.pool)
    };
    assert_eq!(
        labels(with_row).await.unwrap(),
        (Some("web-01".into()), Some("falco_alert".into()), Some(3))
    );
    assert_eq!(labels(without_row).await.unwrap(), (None, None, None));
    env.cleanup().await;
}

/// A database migrated before vectors were kept per distinct text (0006) keeps its
/// vectors: each distinct vector becomes a text row, and every event points at it.
/// Retention then removes old events' vectors and the texts no event has any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_event_vectors_carry_over_to_texts() {
    let env = TestEnv::new("vectors_0006").await;
    migrate_until(&env, "0006_event_vectors.sql").await;

    let unit = |axis: usize| {
        let mut v = vec![0.0f32; 384];
        v[axis] = 1.0;
        palisade_core::vectors::vector_literal(&v)
    };
    // Two events with one vector (the same alert on two hosts), one with another;
    // the third is a year older.
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    for (n, ts, vector) in [
        (1u128, now, unit(0)),
        (2, now, unit(0)),
        (3, now - Duration::days(365), unit(1)),
    ] {
        sqlx::query(
            "INSERT INTO event_vectors (event_id, ts, model, text_version, embedding) \
             VALUES ($1, $2, 'all-MiniLM-L6-v2:int8', 1, $3::vector)",
        )
        .bind(uuid::Uuid::from_u128(n))
        .bind(ts)
        .bind(vector)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    palisade_schema::migrate(&env.pool).await.unwrap();

    assert_eq!(env.count("SELECT count(*) FROM embedding_texts").await, 2);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM event_vectors v JOIN embedding_texts t USING (text_key) \
             WHERE t.text IS NULL AND t.model = 'all-MiniLM-L6-v2:int8' AND t.text_version = 1"
        )
        .await,
        3
    );
    let same_alert: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT text_key) FROM event_vectors WHERE event_id = ANY($1)",
    )
    .bind([uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2)])
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(same_alert, 1);
    let nearest: uuid::Uuid = sqlx::query_scalar(
        "SELECT v.event_id FROM event_vectors v JOIN embedding_texts t USING (text_key) \
         ORDER BY t.embedding <=> $1::vector, v.event_id DESC LIMIT 1",
    )
    .bind(unit(1))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(nearest, uuid::Uuid::from_u128(3));

    let maintenance = Maintenance::new(Retention {
        events_days: Some(90),
        ..Retention::default()
    });
    let report = maintenance.run_once(&env.pool, now).await.unwrap();
    assert_eq!((report.vectors_deleted, report.texts_deleted), (1, 1));
    assert_eq!(env.count("SELECT count(*) FROM embedding_texts").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM event_vectors").await, 2);
    env.cleanup().await;
}
