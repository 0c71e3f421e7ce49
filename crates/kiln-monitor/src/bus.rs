//! The in-process event bus (observer). Publishing never waits: each subscriber has its own
//! bounded queue, and an event that finds a subscriber's queue full is dropped *for that
//! subscriber* and counted, so a slow prediction-log disk or a stuck webhook never adds latency
//! to a request, and never takes events away from the other subscribers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::events::Event;

/// Which events a subscriber wants.
pub type Filter = fn(&Event) -> bool;

struct Subscriber {
    name: &'static str,
    filter: Filter,
    tx: mpsc::Sender<Event>,
    delivered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// Fan-out of events to subscribers; cheap to clone (one shared list).
#[derive(Clone, Default)]
pub struct EventBus {
    subscribers: Arc<RwLock<Vec<Subscriber>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.stats())
            .finish()
    }
}

/// A subscriber's end: its queue and its counters.
#[derive(Debug)]
pub struct Subscription {
    pub rx: mpsc::Receiver<Event>,
    pub name: &'static str,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Events this subscriber lost to a full queue so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The drop counter itself, to read after the subscription moved into its consumer.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// A subscriber's counts, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStats {
    pub name: &'static str,
    pub delivered: u64,
    pub dropped: u64,
    /// Events waiting in its queue now.
    pub queued: usize,
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus::default()
    }

    /// A new subscriber named `name` (metrics label it so) that receives the events `filter`
    /// accepts, with room for `capacity` events not yet consumed.
    pub fn subscribe(&self, name: &'static str, capacity: usize, filter: Filter) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        self.subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber {
                name,
                filter,
                tx,
                delivered: Arc::new(AtomicU64::new(0)),
                dropped: dropped.clone(),
            });
        Subscription { rx, name, dropped }
    }

    /// Whether anyone listens to events like this one (so publishers can skip building them).
    pub fn wants(&self, probe: &Event) -> bool {
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| !s.tx.is_closed() && (s.filter)(probe))
    }

    /// Hands `event` to every interested subscriber without waiting; a full queue drops it for
    /// that subscriber (counted). Subscribers whose receiver is gone are forgotten.
    pub fn publish(&self, event: Event) {
        let mut closed = false;
        {
            let subscribers = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
            for s in subscribers.iter().filter(|s| (s.filter)(&event)) {
                match s.tx.try_send(event.clone()) {
                    Ok(()) => {
                        s.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                }
            }
        }
        if closed {
            self.subscribers
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|s| !s.tx.is_closed());
        }
    }

    /// Every subscriber's counts.
    pub fn stats(&self) -> Vec<SubscriberStats> {
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| SubscriberStats {
                name: s.name,
                delivered: s.delivered.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed),
                queued: s.tx.max_capacity() - s.tx.capacity(),
            })
            .collect()
    }
}

/// Accepts every event.
pub fn all(_: &Event) -> bool {
    true
}

/// Accepts prediction events only.
pub fn predictions(e: &Event) -> bool {
    matches!(e, Event::Prediction(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::DeploymentEvent;

    fn deployment(v: u32) -> Event {
        Event::Deployment(Arc::new(DeploymentEvent {
            model: "m".into(),
            version: v,
            stage: "production".into(),
            ts_micros: 0,
        }))
    }

    #[tokio::test]
    async fn a_full_subscriber_drops_and_counts_without_starving_the_others() {
        let bus = EventBus::new();
        let mut slow = bus.subscribe("slow", 2, all);
        let mut fast = bus.subscribe("fast", 100, all);
        for v in 0..10 {
            bus.publish(deployment(v));
        }
        assert_eq!(slow.dropped(), 8);
        assert_eq!(fast.dropped(), 0);
        let mut got = Vec::new();
        while let Ok(Event::Deployment(d)) = fast.rx.try_recv() {
            got.push(d.version);
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        let mut got = Vec::new();
        while let Ok(Event::Deployment(d)) = slow.rx.try_recv() {
            got.push(d.version);
        }
        assert_eq!(
            got,
            vec![0, 1],
            "the oldest events are kept, later ones dropped"
        );
        let stats = bus.stats();
        assert_eq!(stats[0].dropped, 8);
        assert_eq!(stats[0].delivered, 2);
    }

    #[tokio::test]
    async fn filters_pick_events_and_closed_subscribers_are_forgotten() {
        let bus = EventBus::new();
        let mut only_predictions = bus.subscribe("log", 10, predictions);
        assert!(!bus.wants(&deployment(1)));
        bus.publish(deployment(1));
        assert!(only_predictions.rx.try_recv().is_err());
        let gone = bus.subscribe("gone", 10, all);
        drop(gone);
        bus.publish(deployment(2));
        assert_eq!(bus.stats().len(), 1);
    }
}
