//! What the benchmarks share: a deterministic PRNG, fixture files and fresh databases.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// A small deterministic PRNG (xorshift64*), so every run builds the same data.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A plausible IPv4 address.
    pub fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            10 + self.below(200),
            self.below(256),
            self.below(256),
            1 + self.below(254)
        )
    }
}

/// A file of the project's test fixtures.
pub fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The real Falco alerts of the fixtures, one JSON object each (templates).
pub fn falco_alerts() -> Vec<serde_json::Value> {
    fixture("falco/alerts.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

/// The auth-log fixture's messages: each line after its syslog date and host
/// (`sshd[3402]: Failed password …`).
pub fn auth_messages() -> Vec<String> {
    fixture("logs/beats_system_auth_test.log")
        .lines()
        .filter_map(|l| l.splitn(5, ' ').nth(4).map(str::to_owned))
        .collect()
}

/// `url` pointing at `database` instead.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (host, _) = base.rsplit_once('/').expect("database URL has a path");
    query.map_or(format!("{host}/{database}"), |q| {
        format!("{host}/{database}?{q}")
    })
}

/// Drops and creates `name`, migrates it, and returns its URL and a pool.
pub async fn fresh_database(admin_url: &str, name: &str) -> (String, sqlx::PgPool) {
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .expect("PostgreSQL: run scripts/stack.sh up");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = with_database(admin_url, name);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    palisade_schema::migrate(&pool).await.unwrap();
    (url, pool)
}

/// The `p`th percentile (nearest rank) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The environment variable `name` parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
