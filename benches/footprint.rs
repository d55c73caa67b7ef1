//! Memory the in-memory backend holds per user and per event, measured by
//! counting the bytes live on the heap before and after loading them.
//!
//! ```text
//! cargo bench --bench footprint
//! ```
//!
//! Loads 100,000 users and 1,000,000 events (each with a small payload,
//! `{"n": <int>, "country": "C<k>"}`) and prints bytes per record. The
//! count includes everything the backend keeps: the records and its
//! indexes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use dreamnet_db::{NewEvent, NewUser, Store};
use serde_json::json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const USERS: usize = 100_000;
const EVENTS: usize = 1_000_000;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` asks benches for their names.
        println!("footprint: bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::in_memory();
        let mut ids = Vec::with_capacity(USERS);
        let before = live();
        for i in 0..USERS {
            let user = store
                .users()
                .create(NewUser::with_email(
                    format!("user-{i}@example.com").parse().unwrap(),
                ))
                .await
                .unwrap();
            ids.push(user.id);
        }
        let users_bytes = live() - before - (ids.capacity() * 16) as isize;
        println!(
            "in-memory users:  {USERS} users hold {:.1} MiB: {} bytes per user",
            users_bytes as f64 / 1_048_576.0,
            users_bytes / USERS as isize
        );

        let before = live();
        let event_type: dreamnet_db::EventType = "page.view".parse().unwrap();
        for chunk in 0..EVENTS / 10_000 {
            let batch: Vec<NewEvent> = (0..10_000)
                .map(|j| {
                    let i = chunk * 10_000 + j;
                    NewEvent::new(
                        event_type.clone(),
                        json!({"n": i % 1000, "country": format!("C{}", i % 20)}),
                    )
                    .user(ids[i % USERS])
                })
                .collect();
            store.events().record_many(batch).await.unwrap();
        }
        let events_bytes = live() - before;
        println!(
            "in-memory events: {EVENTS} events hold {:.1} MiB: {} bytes per event",
            events_bytes as f64 / 1_048_576.0,
            events_bytes / EVENTS as isize
        );
        let payload = serde_json::to_vec(&json!({"n": 999, "country": "C19"}))
            .unwrap()
            .len();
        println!("  (each payload is about {payload} bytes of JSON text)");
    });
}
