//! How long a revocation takes to reach another PROCESS's local tier
//! (feature `local-cache`), and what a Redis restart does to it.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/dreamnet_bench \
//!     cargo run --release --features local-cache --example local_propagation -- \
//!     [--rounds 10000] [--restart-rounds 2000]
//! ```
//!
//! The example starts a `redis-server` of its own on a spare port (never
//! the machine's main Redis: it kills and restarts this one), issues
//! `rounds + restart-rounds` keys in `DATABASE_URL` (migrated if needed),
//! and spawns itself again as a child process with a local tier. Both
//! share only PostgreSQL and Redis.
//!
//! Each round: the child validates the round's key (answered from its
//! tier), says so, then validates it in a tight loop; the parent revokes
//! it and notes when `revoke` returned. The delay is from that return to
//! the start of the child's first refused validation (the refusal itself
//! then takes one database read, reported apart). After the first refusal
//! the child validates 20 more times and counts any acceptance: there
//! must be none.
//!
//! Then the restart phase: Redis is killed at its first round and started
//! again (empty, as a cache is usually run) one second later while the
//! rounds go on. It reports stale serves (acceptances after a refusal, and
//! rounds whose delay exceeded the normal phase's maximum) and how long
//! after Redis answered again the child's tier served again.
//!
//! The keys are revoked when done (users `propagation-*` are left; each
//! run adds its own).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dreamnet_db::{NewUser, Store};
use hdrhistogram::Histogram;
use uuid::Uuid;

/// Validations after the first refusal, each of which must refuse too.
const AFTER: usize = 20;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn arg(name: &str, default: usize) -> usize {
    let mut it = std::env::args();
    while let Some(a) = it.next() {
        if a == name {
            return it
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"));
        }
    }
    default
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().any(|a| a == "--child") {
        rt.block_on(child());
    } else {
        rt.block_on(parent());
    }
}

// ---- the child: a process with a local tier, validating ----

async fn child() {
    let url = std::env::var("DATABASE_URL").unwrap();
    let redis = std::env::var("PROPAGATION_REDIS").unwrap();
    let prefix = std::env::var("PROPAGATION_PREFIX").unwrap();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines().map(|l| l.unwrap());
    let n: usize = lines.next().unwrap().parse().unwrap();
    let secrets: Vec<String> = (0..n).map(|_| lines.next().unwrap()).collect();
    let store = Store::builder()
        .database_url(url)
        .max_connections(4)
        .redis_url(redis)
        .cache_prefix(prefix)
        .local_cache(2 * n as u64)
        .last_used_resolution(Duration::from_secs(24 * 3600))
        .connect()
        .await
        .unwrap();
    let stats = || store.cache_stats().unwrap();
    while !stats().local_serving {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Warm: the first validation writes `last_used` (and invalidates).
    for s in &secrets {
        store.api_keys().validate(s).await.unwrap();
        store.api_keys().validate(s).await.unwrap();
    }
    // Reports the tier's losses and recoveries as they happen.
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut serving = true;
            loop {
                let s = store.cache_stats().unwrap();
                if s.local_serving != serving {
                    serving = s.local_serving;
                    println!(
                        "s {} {}",
                        if serving { "serving" } else { "lost" },
                        now_ns()
                    );
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        })
    };
    println!("ready");
    for line in lines {
        let i: usize = match line.strip_prefix("k ") {
            Some(i) => i.parse().unwrap(),
            None => break,
        };
        let secret = &secrets[i];
        let before = stats().local_hits;
        store.api_keys().validate(secret).await.unwrap();
        let tier = u8::from(stats().local_hits > before);
        println!("a {i} {tier}");
        let mut last_ok = 0u64;
        let refused;
        loop {
            let start = now_ns();
            match store.api_keys().validate(secret).await {
                Ok(_) => last_ok = start,
                Err(_) => {
                    refused = (start, now_ns());
                    break;
                }
            }
        }
        let mut accepted_after = 0;
        for _ in 0..AFTER {
            if store.api_keys().validate(secret).await.is_ok() {
                accepted_after += 1;
            }
        }
        println!(
            "r {i} {} {} {last_ok} {accepted_after}",
            refused.0, refused.1
        );
    }
    watcher.abort();
}

// ---- the parent: Redis's owner, revoking ----

struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis { port, child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server listens"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Round {
    /// Revoke's return to the first refused validation's start, in µs
    /// (0 if the refusal started before the return).
    delay_us: u64,
    /// … to that refusal's return.
    refused_us: u64,
    /// Whether the child's validation before the revoke came from its tier.
    tier: bool,
    accepted_after: u64,
}

/// The restart phase's figures: delays, stale serves, and how long after
/// Redis answered again the child's tier served again.
fn report_restart(
    during: &[Round],
    restarted_at: Option<u64>,
    srx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    summary(
        "restart phase (Redis killed at its start, back 1 s later)",
        during,
    );
    let stale: u64 = during.iter().map(|r| r.accepted_after).sum();
    println!("  stale serves: {stale} acceptances after a refusal");
    let mut serving_again = None;
    while let Ok(line) = srx.try_recv() {
        let f: Vec<&str> = line.split(' ').collect();
        let t: u64 = f[2].parse().unwrap();
        if f[1] == "serving" && restarted_at.is_some_and(|r| t >= r) && serving_again.is_none() {
            serving_again = Some(t);
        }
    }
    match (restarted_at, serving_again) {
        (Some(r), Some(s)) => println!(
            "  the child's tier served again {} ms after Redis answered",
            (s - r) / 1_000_000
        ),
        _ => println!("  the child's tier did not serve again within the phase"),
    }
}

fn summary(name: &str, rounds: &[Round]) -> u64 {
    let mut delay = Histogram::<u64>::new(3).unwrap();
    let mut refused = Histogram::<u64>::new(3).unwrap();
    for r in rounds {
        delay.record(r.delay_us.max(1)).unwrap();
        refused.record(r.refused_us.max(1)).unwrap();
    }
    let tier = rounds.iter().filter(|r| r.tier).count();
    let accepted: u64 = rounds.iter().map(|r| r.accepted_after).sum();
    println!(
        "{name}: {} revocations ({tier} keys served from the child's tier before)\n  \
         delay revoke return -> first refused validation starts: p50 {} us, p99 {} us, max {} us\n  \
         revoke return -> refusal in hand (one database read more): p50 {} us, p99 {} us, max {} us\n  \
         validations accepted after the first refusal: {accepted} (of {})",
        rounds.len(),
        delay.value_at_quantile(0.5),
        delay.value_at_quantile(0.99),
        delay.max(),
        refused.value_at_quantile(0.5),
        refused.value_at_quantile(0.99),
        refused.max(),
        rounds.len() * AFTER,
    );
    delay.max()
}

async fn parent() {
    let rounds = arg("--rounds", 10_000);
    let restart_rounds = arg("--restart-rounds", 2_000);
    let total = rounds + restart_rounds;
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut redis = Some(PrivateRedis::start());
    let redis_url = format!("redis://127.0.0.1:{}", redis.as_ref().unwrap().port);
    let prefix = format!("propagation:{}:", Uuid::new_v4().simple());
    let store = Store::builder()
        .database_url(url.clone())
        .run_migrations(true)
        .max_connections(8)
        .redis_url(redis_url.clone())
        .cache_prefix(prefix.clone())
        .connect()
        .await
        .unwrap();

    eprintln!("issuing {total} keys…");
    let mut keys = Vec::with_capacity(total);
    let mut secrets = Vec::with_capacity(total);
    let tag = Uuid::new_v4().simple().to_string();
    for chunk in (0..total).collect::<Vec<_>>().chunks(8) {
        let issued = futures_util::future::join_all(chunk.iter().map(|i| {
            let store = store.clone();
            let email = format!("propagation-{tag}-{i}@example.com");
            async move {
                let user = store
                    .users()
                    .create(NewUser::with_email(email.parse().unwrap()))
                    .await
                    .unwrap();
                store
                    .api_keys()
                    .issue(user.id, "propagation", None)
                    .await
                    .unwrap()
            }
        }))
        .await;
        for k in issued {
            keys.push(k.key.id);
            secrets.push(k.secret.expose_secret().to_owned());
        }
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .env("DATABASE_URL", &url)
        .env("PROPAGATION_REDIS", &redis_url)
        .env("PROPAGATION_PREFIX", &prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (stx, mut srx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("s ") {
                let _ = stx.send(line);
            } else if tx.send(line).is_err() {
                break;
            }
        }
    });
    writeln!(to_child, "{total}").unwrap();
    for s in &secrets {
        writeln!(to_child, "{s}").unwrap();
    }
    to_child.flush().unwrap();
    eprintln!("child warming its tier…");
    assert_eq!(rx.recv().await.as_deref(), Some("ready"));

    let mut normal = Vec::with_capacity(rounds);
    let mut during = Vec::with_capacity(restart_rounds);
    let mut restarted_at: Option<u64> = None;
    let mut restart = None;
    for (i, &key) in keys.iter().enumerate() {
        if i == 0 && restart_rounds > 0 {
            let mut r = redis.take().expect("running");
            r.kill();
            eprintln!("Redis killed at round {i}");
            restart = Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                r.spawn();
                (r, now_ns())
            }));
        }
        if let Some(h) = &restart {
            if h.is_finished() {
                let (r, t) = restart.take().unwrap().await.unwrap();
                redis = Some(r);
                restarted_at = Some(t);
                eprintln!("Redis answering again at round {i}");
            }
        }
        writeln!(to_child, "k {i}").unwrap();
        to_child.flush().unwrap();
        let ack = rx.recv().await.unwrap();
        let mut f = ack.split(' ');
        assert_eq!(f.next(), Some("a"));
        assert_eq!(f.next(), Some(i.to_string().as_str()));
        let tier = f.next() == Some("1");
        store.api_keys().revoke(key).await.unwrap();
        let returned = now_ns();
        let report = rx.recv().await.unwrap();
        let f: Vec<u64> = report
            .split(' ')
            .skip(2)
            .map(|v| v.parse().unwrap())
            .collect();
        let round = Round {
            delay_us: f[0].saturating_sub(returned) / 1000,
            refused_us: f[1].saturating_sub(returned) / 1000,
            tier,
            accepted_after: f[3],
        };
        if i < restart_rounds {
            during.push(round);
            if i + 1 == restart_rounds {
                report_restart(&during, restarted_at, &mut srx);
            }
        } else {
            normal.push(round);
            if normal.len() % 1000 == 0 {
                summary(&format!("normal phase, first {}", normal.len()), &normal);
            }
        }
    }
    if let Some(h) = restart.take() {
        let (r, _) = h.await.unwrap();
        redis = Some(r);
    }
    writeln!(to_child, "done").unwrap();
    drop(to_child);
    let _ = child.wait();
    println!();
    summary("normal phase", &normal);
    for id in keys {
        let _ = store.api_keys().revoke(id).await;
    }
    drop(redis);
}
