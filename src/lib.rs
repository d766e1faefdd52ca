//! # healstore
//!
//! The durable memory of a self-healing system. Every failure and every healing attempt is
//! appended as an event to an append-only log in one SQLite file; everything else is derived
//! from that log.
//!
//! The parts, in the order data flows through them:
//!
//! - [`event`]: events as the store sees them: [`NewEvent`] in, [`RecordedEvent`] out, and the
//!   JSON Lines form [`EventLine`].
//! - [`events`]: the typed, versioned facts healstore writes ([`HealEvent`]).
//! - [`Store`]: the log itself: durable group-commit appends with idempotency and optimistic
//!   concurrency, paged reads by stream, position and time, and live tails.
//! - [`heal`]: detection, strategies whose state is folded from their event streams, and the
//!   healer that records every decision.
//! - [`audit`]: audit reports over a time window, one record per automated action.
//! - [`analytics`]: SQL over time windows on read models the store maintains with the events:
//!   statistics, MTTR, effectiveness, recommendations, health, patterns and predictions.
//! - [`live`]: live subscriptions to the log for many subscribers at once, from a position,
//!   never skipping or repeating an event, with bounded memory per subscriber.
//! - [`metrics`]: Prometheus metrics counted from the log, the writer and the healer's memory.
//! - [`input`]: reading JSON Lines and archives from files, pipes and standard input with
//!   bounded memory: one maximum line length, gzip told by its first bytes.
//! - [`output`]: the files written besides the database (archives, pages), never the
//!   database itself, an existing file or a non-regular one.
//! - [`clock`]: injectable time; nothing reads the wall clock but [`SystemClock`].
//!
//! ```no_run
//! # async fn demo() -> healstore::Result<()> {
//! use healstore::{ExpectedVersion, NewEvent, Store, StoreOptions};
//! let store = Store::open("healstore.db", StoreOptions::default()).await?;
//! let event = NewEvent::new(
//!     "failure_detected",
//!     chrono::Utc::now(),
//!     serde_json::json!({"failure_id": "f-1", "failure_type": "agent_down", "severity": "high"}),
//! );
//! let appended = store.append("failure-f-1", ExpectedVersion::NoStream, vec![event]).await?;
//! println!("stored at position {}", appended[0].position);
//! store.close().await
//! # }
//! ```

pub mod analytics;
pub mod audit;
pub mod backtest;
pub mod clock;
pub mod config;
mod error;
pub mod event;
pub mod events;
pub mod heal;
pub mod input;
pub mod live;
pub mod metrics;
pub mod output;
pub mod serve;
pub mod store;
pub mod time;

pub use analytics::{Analytics, Window};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use event::{Appended, EventLine, ExpectedVersion, NewEvent, RecordedEvent};
pub use events::HealEvent;
pub use store::{
    Checkpoint, Durability, EventFilter, EventStream, ImportReport, ImportSink, PendingAppend,
    Readiness, SCHEMA_VERSION, Snapshot, Store, StoreObserver, StoreOptions, StreamAppend,
    VerifyOptions, VerifyReport, WRITER_CACHE_KIB,
};
