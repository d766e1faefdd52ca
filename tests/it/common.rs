//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use healstore::{NewEvent, Store, StoreOptions};

/// A fixed instant, so that tests never depend on the wall clock.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

/// A fresh directory and a database path inside it.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    (dir, path)
}

pub async fn open(path: &Path) -> Store {
    Store::open(path, StoreOptions::default()).await.unwrap()
}

/// An event of an unknown (to the store, "custom") type with a small payload.
pub fn ev(id: &str, at: DateTime<Utc>) -> NewEvent {
    NewEvent::new("test_happened", at, serde_json::json!({"n": id})).with_id(id)
}

/// The healstore binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_healstore"))
}
