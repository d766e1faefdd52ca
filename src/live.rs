//! Live subscriptions to the log, for many subscribers at once (the service's event stream).
//!
//! One task per process follows the log ([`Store::follow`]: woken by this process's commits,
//! polling for other processes') and publishes each event, rendered once as its JSON line,
//! into a ring shared by every subscriber ([`LIVE_RING`] events). A subscriber reads the log
//! from its position until it has caught up, then takes events from the ring. Positions
//! order everything: a subscriber delivers only events after the last one it delivered, so
//! nothing is repeated, and since it joins the ring before it reads the log, every event the
//! ring publishes later is either in what it reads or in the ring, so nothing is skipped.
//!
//! Memory per subscriber is bounded whatever its speed: a subscriber that falls more than the
//! ring behind (a slow reader: its connection is only written as fast as the client reads)
//! loses its place in the ring, not events: it reads the log again from its last position,
//! a page at a time, as a new subscriber does. An idle subscriber holds its place in the ring
//! and nothing else.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::store::{EventFilter, EventStream, Store};

/// Events the shared ring holds: how far a live subscriber may fall behind before it reads
/// the log again.
pub const LIVE_RING: usize = 4096;

/// One event as subscribers receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub position: i64,
    pub event_type: String,
    /// The event's JSON line, as `healstore events --format json` prints it (no newline).
    pub json: String,
}

impl From<&RecordedEvent> for LiveEvent {
    fn from(e: &RecordedEvent) -> Self {
        LiveEvent {
            position: e.position,
            event_type: e.event_type.clone(),
            json: e.to_line().to_json(),
        }
    }
}

/// The process's live view of the log. Cheap to clone.
#[derive(Clone)]
pub struct LiveLog {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ring: broadcast::Sender<Arc<LiveEvent>>,
    follower: tokio::sync::OnceCell<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.follower.get() {
            t.abort();
        }
    }
}

impl std::fmt::Debug for LiveLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLog")
            .field("subscribers", &self.inner.ring.receiver_count())
            .finish()
    }
}

impl LiveLog {
    /// A live view of the store's log; its follower starts with the first subscriber.
    pub fn new(store: &Store) -> LiveLog {
        LiveLog::with_ring(store, LIVE_RING)
    }

    /// [`LiveLog::new`] with a ring of another size (tests).
    pub fn with_ring(store: &Store, ring: usize) -> LiveLog {
        let (tx, _) = broadcast::channel(ring.max(1));
        LiveLog {
            inner: Arc::new(Inner {
                store: store.clone(),
                ring: tx,
                follower: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.inner.ring.receiver_count()
    }

    /// Stops following the log; subscribers' streams end once they have delivered what they
    /// hold.
    pub fn stop(&self) {
        if let Some(t) = self.inner.follower.get() {
            t.abort();
        }
    }

    /// Starts the follower once: from the log's head now.
    async fn start(&self) -> Result<()> {
        self.inner
            .follower
            .get_or_try_init(|| async {
                let head = self.inner.store.head_position().await?;
                let weak = Arc::downgrade(&self.inner);
                Ok::<_, Error>(tokio::spawn(follow(weak, head)))
            })
            .await?;
        Ok(())
    }

    /// Every event after `after` (a position; 0 from the start), in position order, then each
    /// new one as it is committed, by this process or any other. Ends only when dropped (or
    /// with an error reading the log, its last item).
    pub async fn subscribe(
        &self,
        after: i64,
    ) -> Result<BoxStream<'static, Result<Arc<LiveEvent>>>> {
        if after < 0 {
            return Err(Error::InvalidInput(format!(
                "a position is 0 or more, not {after}"
            )));
        }
        self.start().await?;
        // Joined before the log is read: what the ring publishes from now on is either in
        // that read or in the ring.
        let rx = self.inner.ring.subscribe();
        let sub = Subscriber {
            store: self.inner.store.clone(),
            rx,
            last: after,
            reading: Some(self.inner.store.read(read_after(after))),
            failed: false,
        };
        Ok(futures_util::stream::unfold(sub, |mut sub| async move {
            let item = sub.next().await?;
            Some((item, sub))
        })
        .boxed())
    }
}

fn read_after(position: i64) -> EventFilter {
    EventFilter {
        after_position: position,
        position_order: true,
        ..Default::default()
    }
}

/// Follows the log from `head` and publishes every event into the ring, rendered once. A read
/// that fails is started again from the last event published, after a pause.
async fn follow(inner: std::sync::Weak<Inner>, mut head: i64) {
    loop {
        let (store, ring) = match inner.upgrade() {
            Some(i) => (i.store.clone(), i.ring.clone()),
            None => return,
        };
        let mut events = store.follow(read_after(head));
        drop(store);
        while let Some(e) = events.next().await {
            match e {
                Ok(e) => {
                    head = e.position;
                    // (no subscriber now: nothing to keep)
                    let _ = ring.send(Arc::new(LiveEvent::from(&e)));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the live event stream could not read the log; retrying");
                    break;
                }
            }
        }
        drop(events);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Subscriber {
    store: Store,
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    /// The last position delivered.
    last: i64,
    /// Reading the log (catching up), or `None` when live on the ring.
    reading: Option<EventStream>,
    failed: bool,
}

impl Subscriber {
    async fn next(&mut self) -> Option<Result<Arc<LiveEvent>>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(reading) = &mut self.reading {
                match reading.next().await {
                    Some(Ok(e)) => {
                        if e.position <= self.last {
                            continue;
                        }
                        self.last = e.position;
                        return Some(Ok(Arc::new(LiveEvent::from(&e))));
                    }
                    Some(Err(e)) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    None => {
                        // Caught up: from here on, the ring (events already read are
                        // skipped by position).
                        self.reading = None;
                    }
                }
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if e.position <= self.last {
                        continue;
                    }
                    self.last = e.position;
                    return Some(Ok(e));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the ring: read the log again from the last delivered.
                    self.reading = Some(self.store.read(read_after(self.last)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
