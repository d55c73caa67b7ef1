//! A load run against PostgreSQL: a realistic mix of API-key validations,
//! user reads and event writes from many concurrent tasks over one pool.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --release --example load -- \
//!     [--tasks 500] [--pool 100] [--seconds 30] [--users 10000] [--keep]
//! ```
//!
//! The mix is 80 % key validations, 15 % user reads and 5 % event writes.
//! It seeds `--users` users with one key each (removed at the end unless
//! `--keep`), prints a progress line every second, then throughput and
//! latency percentiles per operation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dreamnet_db::{NewEvent, NewUser, Store};
use hdrhistogram::Histogram;
use serde_json::json;
use uuid::Uuid;

struct Args {
    tasks: usize,
    pool: u32,
    seconds: u64,
    users: usize,
    keep: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        tasks: 500,
        pool: 100,
        seconds: 30,
        users: 10_000,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--tasks" => args.tasks = value("--tasks")? as usize,
            "--pool" => args.pool = value("--pool")? as u32,
            "--seconds" => args.seconds = value("--seconds")?,
            "--users" => args.users = value("--users")? as usize,
            "--keep" => args.keep = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[derive(Clone, Copy)]
enum Op {
    Validate,
    ReadUser,
    WriteEvent,
}

const OPS: [(&str, Op); 3] = [
    ("validate key", Op::Validate),
    ("read user", Op::ReadUser),
    ("record event", Op::WriteEvent),
];

/// A small, fast, per-task random source (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().inspect_err(|_| {
        eprintln!("usage: load [--tasks N] [--pool N] [--seconds N] [--users N] [--keep]");
    })?;
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set: the load run needs PostgreSQL.");
        std::process::exit(2);
    };
    let store = Store::builder()
        .database_url(url)
        .max_connections(args.pool)
        .connection_timeout(Duration::from_secs(5))
        .run_migrations(true)
        .connect()
        .await?;

    println!("seeding {} users with one key each…", args.users);
    let run = Uuid::new_v4().simple().to_string();
    let seeded = Instant::now();
    let mut users = Vec::with_capacity(args.users);
    let mut keys = Vec::with_capacity(args.users);
    for chunk in (0..args.users).collect::<Vec<_>>().chunks(64) {
        let made = futures_util::future::try_join_all(chunk.iter().map(|i| {
            let store = store.clone();
            let email = format!("load-{}-{i}@example.com", &run[..12]);
            async move {
                store
                    .users()
                    .create_with_key(NewUser::with_email(email.parse()?), "load", None)
                    .await
            }
        }))
        .await?;
        for (user, issued) in made {
            users.push(user.id);
            keys.push(issued.secret.expose_secret().to_owned());
        }
    }
    println!("seeded in {:.1?}", seeded.elapsed());
    let users = Arc::new(users);
    let keys = Arc::new(keys);

    println!(
        "running {} tasks over a pool of {} for {} s (80 % validate, 15 % read, 5 % write)…",
        args.tasks, args.pool, args.seconds
    );
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(args.tasks);
    for t in 0..args.tasks {
        let (store, users, keys) = (store.clone(), users.clone(), keys.clone());
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        let timeouts = timeouts.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
            let mut hist = [histogram(), histogram(), histogram()];
            let event_type: dreamnet_db::EventType = "load.tick".parse().expect("valid type");
            while !stop.load(Ordering::Relaxed) {
                let roll = rng.next() % 100;
                let i = (rng.next() % users.len() as u64) as usize;
                let began = Instant::now();
                let (slot, outcome) = if roll < 80 {
                    (0, store.api_keys().validate(&keys[i]).await.map(drop))
                } else if roll < 95 {
                    (1, store.users().get(users[i]).await.map(drop))
                } else {
                    let event =
                        NewEvent::new(event_type.clone(), json!({"n": roll})).user(users[i]);
                    (2, store.events().record(event).await.map(drop))
                };
                let micros = began.elapsed().as_micros() as u64;
                hist[slot].saturating_record(micros.max(1));
                done.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = outcome {
                    errors.fetch_add(1, Ordering::Relaxed);
                    if matches!(e, dreamnet_db::Error::PoolTimeout { .. }) {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }

    let deadline = start + Duration::from_secs(args.seconds);
    let mut last = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
        let now = done.load(Ordering::Relaxed);
        let pool = store.pool_state().unwrap_or_default();
        println!(
            "  {:>4.0} s  {:>9} ops  {:>8} ops/s  errors {:>5}  pool in use {:>3}/{:<3} waits {}",
            start.elapsed().as_secs_f64(),
            now,
            now - last,
            errors.load(Ordering::Relaxed),
            pool.in_use,
            pool.connections,
            pool.waits
        );
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let mut totals = [histogram(), histogram(), histogram()];
    for h in handles {
        for (total, part) in totals.iter_mut().zip(h.await?) {
            total.add(part)?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    let mut all = histogram();
    println!(
        "\n{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "operation", "ops", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for ((name, _), h) in OPS.iter().zip(&totals) {
        all.add(h)?;
        print_row(name, h);
    }
    print_row("all", &all);
    let total = all.len();
    println!(
        "\nthroughput: {:.0} ops/s over {:.1} s, {} errors ({} of them pool timeouts)",
        total as f64 / elapsed,
        elapsed,
        errors.load(Ordering::Relaxed),
        timeouts.load(Ordering::Relaxed)
    );
    let mean_ms = all.mean() / 1000.0;
    println!(
        "platform expectation: mean under 50 ms: {} (mean {:.2} ms, p99 {:.2} ms)",
        if mean_ms < 50.0 { "met" } else { "NOT met" },
        mean_ms,
        all.value_at_quantile(0.99) as f64 / 1000.0
    );

    if !args.keep {
        println!("removing the seeded users…");
        for id in users.iter() {
            store.users().delete(*id).await?;
        }
    }
    Ok(())
}

fn print_row(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{:<14} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        name,
        h.len(),
        h.mean() / 1000.0,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}
