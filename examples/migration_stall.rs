//! How long the services' queries wait while migrations run on a populated
//! database, and whether any of them fails.
//!
//! ```text
//! cargo run --release --example migration_stall          # Store::migrate; 200,000 users, 3,000,000 events
//! mkdir -p /tmp/before && git archive d85c5c1 migrations | tar -x -C /tmp/before
//!                                                        # an earlier set of migrations...
//! cargo run --release --example migration_stall -- --migrations-dir /tmp/before/migrations
//!                                                        # ...run as diesel's harness runs them
//! cargo run --example migration_stall -- --users 20000 --events 300000 --keys 5000 \
//!     --before 3 --after 3 --check                       # the small run of .ci/run
//! ```
//!
//! On the server of `DREAMNET_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) it creates a database with
//! the three shared tables as the services have them
//! (`tests/fixtures/services_schema.sql`) and fills it with users, API keys
//! and events (`--users`, `--keys`, `--events`), some with the NULLs older
//! services left, which the migrations backfill. Then `pgbench` (simple
//! protocol, `--writers` clients, 2 by default) does what the services do:
//! read a user by id, insert an event. After `--before` seconds the
//! migrations run; `--after` seconds after they end pgbench is stopped (with
//! SIGALRM, which it takes as the end of its `-T`), and its per-transaction
//! log gives the latencies before, during and after the migrations, the
//! longest time no write completed, and the failed transactions. `--check`
//! exits with status 1 if any transaction failed. The database is dropped at
//! the end unless `--keep` is given. The store logs each migration it
//! applies, and any retry, on stderr (`RUST_LOG`, default
//! `dreamnet_db=info`).
//!
//! `pgbench` ships with the PostgreSQL client (`apt-get install
//! postgresql-client`; `postgresql-contrib` on older releases).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::Connection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use dreamnet_db::Store;

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    users: u64,
    keys: u64,
    events: u64,
    writers: u32,
    before: Duration,
    after: Duration,
    migrations_dir: Option<PathBuf>,
    check: bool,
    keep: bool,
}

impl Options {
    fn parse() -> Result<Self, Failure> {
        let mut o = Options {
            users: 200_000,
            keys: 50_000,
            events: 3_000_000,
            writers: 2,
            before: Duration::from_secs(10),
            after: Duration::from_secs(10),
            migrations_dir: None,
            check: false,
            keep: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--users" => o.users = value()?.parse()?,
                "--keys" => o.keys = value()?.parse()?,
                "--events" => o.events = value()?.parse()?,
                "--writers" => o.writers = value()?.parse()?,
                "--before" => o.before = Duration::from_secs(value()?.parse()?),
                "--after" => o.after = Duration::from_secs(value()?.parse()?),
                "--migrations-dir" => o.migrations_dir = Some(value()?.into()),
                "--check" => o.check = true,
                "--keep" => o.keep = true,
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        Ok(o)
    }
}

fn admin_url() -> String {
    std::env::var("DREAMNET_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn url_for(db: &str) -> Result<String, Failure> {
    let mut url = url::Url::parse(&admin_url())?;
    url.set_path(&format!("/{db}"));
    Ok(url.to_string())
}

async fn client(url: &str) -> Result<tokio_postgres::Client, Failure> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The services' tables, filled. About one user in ten, one key in twenty
/// and one event in seventy has a NULL the migrations backfill.
async fn fill(url: &str, o: &Options) -> Result<(), Failure> {
    let db = client(url).await?;
    db.batch_execute(include_str!("../tests/fixtures/services_schema.sql"))
        .await?;
    let users = o.users;
    db.batch_execute(&format!(
        "INSERT INTO users (id, email, wallet_address, passport_tier, created_at, updated_at, metadata, preferences)
         SELECT md5(i::text)::uuid,
                CASE WHEN i % 5 <> 0 THEN 'user' || i || '@example.com' END,
                CASE WHEN i % 5 = 0 OR i % 7 = 0 THEN '0x' || lpad(to_hex(i), 40, '0') END,
                CASE WHEN i % 50 = 3 THEN NULL ELSE 'citizen' END,
                CASE WHEN i % 50 = 4 THEN NULL ELSE now() - i * interval '1 minute' END,
                CASE WHEN i % 50 = 5 THEN NULL ELSE now() END,
                CASE WHEN i % 50 = 6 THEN NULL ELSE '{{}}'::jsonb END,
                CASE WHEN i % 50 = 7 THEN NULL ELSE '{{\"theme\": \"dark\"}}'::jsonb END
         FROM generate_series(1, {users}) i;
         INSERT INTO api_keys (id, user_id, service, hashed_key, created_at)
         SELECT md5('key' || i)::uuid, md5((1 + i % {users})::text)::uuid, 'billing',
                encode(sha256(('key-' || i)::bytea), 'hex'),
                CASE WHEN i % 20 = 0 THEN NULL ELSE now() END
         FROM generate_series(1, {keys}) i;",
        keys = o.keys
    ))
    .await?;
    let chunk = 500_000;
    let mut from = 1;
    while from <= o.events {
        let to = (from + chunk - 1).min(o.events);
        db.batch_execute(&format!(
            "INSERT INTO events (id, user_id, event_type, payload, created_at)
             SELECT gen_random_uuid(),
                    CASE WHEN i % 10 = 0 THEN NULL ELSE md5((1 + i % {users})::text)::uuid END,
                    'type.' || (i % 12),
                    CASE WHEN i % 100 = 0 THEN NULL ELSE jsonb_build_object('n', i % 1000, 'order', i) END,
                    CASE WHEN i % 200 = 0 THEN NULL ELSE now() - (i % 43200) * interval '1 minute' END
             FROM generate_series({from}, {to}) i"
        ))
        .await?;
        from = to + 1;
    }
    for table in ["users", "api_keys", "events"] {
        db.batch_execute(&format!("VACUUM ANALYZE {table}")).await?;
    }
    Ok(())
}

/// What each pgbench client runs: the services' read of a user by id and
/// their insert of an event.
fn writer_script(users: u64) -> String {
    format!(
        "\\set uid random(1, {users})\n\
         SELECT id, email, wallet_address, passport_tier, created_at, updated_at, metadata, preferences \
         FROM users WHERE id = md5(:uid::text)::uuid;\n\
         INSERT INTO events (id, user_id, event_type, payload, created_at) \
         VALUES (gen_random_uuid(), md5(:uid::text)::uuid, 'service.write', '{{\"source\": \"pgbench\"}}', now());\n"
    )
}

/// Runs the migrations; returns how many were applied.
async fn migrate(url: &str, dir: Option<&Path>) -> Result<usize, Failure> {
    match dir {
        None => {
            let store = Store::builder()
                .database_url(url)
                .max_connections(1)
                .connect()
                .await?;
            Ok(store.migrate().await?.len())
        }
        Some(dir) => {
            let (url, dir) = (url.to_owned(), dir.to_owned());
            tokio::task::spawn_blocking(move || -> Result<usize, Failure> {
                let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
                Ok(conn
                    .run_pending_migrations(FileBasedMigrations::from_path(dir)?)?
                    .len())
            })
            .await?
        }
    }
}

/// One pgbench transaction: when it ended, how long it took (`None`:
/// failed).
struct Txn {
    end: f64,
    latency: Option<f64>,
}

/// Reads pgbench's per-transaction logs (`client txn time script epoch_s
/// epoch_us`; time in µs, or a word for a failed transaction).
fn read_logs(dir: &Path) -> Result<Vec<Txn>, Failure> {
    let mut txns = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("txn"))
        {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                continue;
            }
            let end = f[4].parse::<f64>()? + f[5].parse::<f64>()? / 1e6;
            let latency = f[2].parse::<f64>().ok().map(|us| us / 1e6);
            txns.push(Txn { end, latency });
        }
    }
    txns.sort_by(|a, b| a.end.total_cmp(&b.end));
    Ok(txns)
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Latencies and failures of the transactions in one phase, and the longest
/// time in `[from, to]` in which no transaction completed.
fn phase(name: &str, txns: &[&Txn], from: f64, to: f64) -> String {
    let mut lat: Vec<f64> = txns.iter().filter_map(|t| t.latency).collect();
    lat.sort_by(f64::total_cmp);
    let failed = txns.len() - lat.len();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |s| s * 1e3)
    };
    let mut gap: f64 = 0.0;
    let mut last = from;
    for t in txns.iter().filter(|t| t.end >= from && t.end <= to) {
        gap = gap.max(t.end - last);
        last = t.end;
    }
    gap = gap.max(to - last);
    format!(
        "{name:<16} {:>8.1} {:>12} {:>7} {:>8.1} {:>8.1} {:>9.1} {:>10.1}",
        to - from,
        txns.len(),
        failed,
        pct(0.5),
        pct(0.99),
        lat.last().map_or(0.0, |s| s * 1e3),
        gap * 1e3
    )
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let o = Options::parse()?;
    // The store's own account of each migration (and of any retry).
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "dreamnet_db=info".to_owned()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let name = format!("dreamnet_stall_{}", std::process::id());
    let admin = client(&admin_url()).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let url = url_for(&name)?;
    let logs = std::env::temp_dir().join(&name);
    // Whatever happens, the database and the logs go (unless --keep).
    let measured = measure(&o, &name, &url, &logs).await;
    if !o.keep {
        let _ = std::fs::remove_dir_all(&logs);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
    }
    if measured? > 0 && o.check {
        std::process::exit(1);
    }
    Ok(())
}

/// Fills the database, runs pgbench around the migrations and prints what
/// it saw; returns the number of failed transactions.
async fn measure(o: &Options, name: &str, url: &str, logs: &Path) -> Result<usize, Failure> {
    let started = Instant::now();
    fill(url, o).await?;
    println!(
        "database {name}: {} users, {} api keys, {} events, as the services have them (filled in {:.0} s)",
        o.users,
        o.keys,
        o.events,
        started.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(logs)?;
    let script = logs.join("writer.sql");
    std::fs::write(&script, writer_script(o.users))?;
    let mut pgbench = Command::new(std::env::var("PGBENCH").unwrap_or_else(|_| "pgbench".into()))
        .args(["-n", "-M", "simple", "-T", "86400", "-l"])
        .args(["-c", &o.writers.to_string(), "-j", &o.writers.to_string()])
        .arg("-f")
        .arg(&script)
        .arg(format!("--log-prefix={}", logs.join("txn").display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("pgbench could not start ({e}): install postgresql-client"))?;
    println!(
        "pgbench: {} clients, simple protocol, each reading a user by id and inserting an event",
        o.writers
    );

    tokio::time::sleep(o.before).await;
    let migration_start = SystemTime::now();
    let how = match &o.migrations_dir {
        None => "Store::migrate".to_owned(),
        Some(dir) => format!("diesel's harness on {}", dir.display()),
    };
    let applied = migrate(url, o.migrations_dir.as_deref()).await;
    let migration_end = SystemTime::now();
    tokio::time::sleep(o.after).await;
    let stopped = SystemTime::now();
    Command::new("kill")
        .args(["-ALRM", &pgbench.id().to_string()])
        .status()?;
    let stop_waiting = Instant::now();
    while pgbench.try_wait()?.is_none() {
        if stop_waiting.elapsed() > Duration::from_secs(60) {
            pgbench.kill()?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = pgbench.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let aborted = stderr.matches("aborted in command").count();

    let (m0, m1) = (epoch(migration_start), epoch(migration_end));
    match &applied {
        Ok(n) => println!("migrations: {how}, {n} applied in {:.1} s", m1 - m0),
        // The writers' figures are still worth seeing.
        Err(e) => println!("migrations: {how}, FAILED after {:.1} s: {e}", m1 - m0),
    }
    let txns = read_logs(logs)?;
    let start = txns
        .first()
        .map_or(m0, |t| t.end - t.latency.unwrap_or(0.0));
    let before: Vec<&Txn> = txns.iter().filter(|t| t.end < m0).collect();
    let during: Vec<&Txn> = txns
        .iter()
        .filter(|t| t.end >= m0 && t.end - t.latency.unwrap_or(0.0) <= m1)
        .collect();
    let after: Vec<&Txn> = txns
        .iter()
        .filter(|t| t.end - t.latency.unwrap_or(0.0) > m1)
        .collect();
    println!(
        "\n{:<16} {:>8} {:>12} {:>7} {:>8} {:>8} {:>9} {:>10}",
        "writers", "secs", "transactions", "failed", "p50 ms", "p99 ms", "worst ms", "longest gap"
    );
    println!("{}", phase("before", &before, start, m0));
    println!("{}", phase("while migrating", &during, m0, m1));
    println!("{}", phase("after", &after, m1, epoch(stopped)));
    let failed = txns.iter().filter(|t| t.latency.is_none()).count() + aborted;
    println!(
        "\nfailed transactions: {failed} ({aborted} clients aborted); pgbench: {}",
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|l| l.starts_with("number of failed"))
            .unwrap_or("no summary")
    );
    for line in stderr.lines().filter(|l| l.contains("aborted")).take(5) {
        println!("  {line}");
    }
    applied?;
    Ok(failed)
}
