//! Rate limiting a key: a burst, then refusals with the response headers.
//!
//! ```text
//! cargo run --example rate_limit                                   # in memory
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --features redis --example rate_limit
//! ```

use dreamnet_db::{RateLimitPolicy, RateLimiter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 2 requests a second on average, 3 at once.
    let policy = RateLimitPolicy::new(2, std::time::Duration::from_secs(1), 3)?;
    let limiter = limiter(policy).await?;
    for i in 1..=5 {
        let d = limiter.check("api-key:demo").await?;
        let verdict = if d.allowed {
            "200 OK"
        } else {
            "429 Too Many Requests"
        };
        println!("request {i}: {verdict}");
        for (name, value) in d.headers() {
            println!("    {name}: {value}");
        }
    }
    Ok(())
}

#[cfg(feature = "redis")]
async fn limiter(policy: RateLimitPolicy) -> dreamnet_db::Result<RateLimiter> {
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            println!("Redis at REDIS_URL: limits shared by every process using it.");
            let options = dreamnet_db::RedisLimiterOptions {
                prefix: format!("dreamnet:example:{}:", uuid::Uuid::new_v4().simple()),
                ..Default::default()
            };
            RateLimiter::redis(&url, policy, options).await
        }
        Err(_) => Ok(in_memory(policy)),
    }
}

#[cfg(not(feature = "redis"))]
async fn limiter(policy: RateLimitPolicy) -> dreamnet_db::Result<RateLimiter> {
    Ok(in_memory(policy))
}

fn in_memory(policy: RateLimitPolicy) -> RateLimiter {
    println!("In memory: limits for this process.");
    RateLimiter::in_memory(policy)
}
