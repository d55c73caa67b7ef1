//! The conformance suite against the in-memory backend.
#![cfg(feature = "memory")]

mod conformance;

use conformance::Harness;
use dreamnet_db::StoreBuilder;

async fn memory(builder: StoreBuilder) -> Option<Harness> {
    Some(Harness::new(builder.in_memory(), ()))
}

conformance_tests!(memory);
