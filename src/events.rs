//! The push bus: events the server emits (model load and pull progress, models
//! loaded and unloaded, low memory) reach every client that subscribed.
//!
//! A subscriber is the [`ReplySink`] of a `Subscribe` request, so the bus works
//! for every transport the same way: a WebRTC session, native messaging or an
//! HTTP event stream. Each event goes out as a non-final `Event` reply carrying
//! the Subscribe request's id. A sink that reports its client gone is dropped
//! at the next publish. Publishing never waits on a slow client: a sink only
//! queues the event in its stream's bounded outbox; a subscriber that falls
//! behind its bounds gets a last Error event saying so and is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::api::{EventKind, Reply, RequestId, Response, ServerEvent};
use crate::jobs::{ReplySink, lock};

/// One subscription's handle, for [`EventBus::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

struct Subscriber {
    id: SubscriptionId,
    request: RequestId,
    kinds: Vec<EventKind>,
    sink: Arc<dyn ReplySink>,
}

/// The subscribers; shared by the handler and whatever emits events.
#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    next_id: AtomicU64,
}

impl EventBus {
    /// Adds a subscriber: events of `kinds` go to `sink` as replies to `request`.
    pub fn subscribe(
        &self,
        request: RequestId,
        kinds: Vec<EventKind>,
        sink: Arc<dyn ReplySink>,
    ) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        lock(&self.subscribers).push(Arc::new(Subscriber {
            id,
            request,
            kinds,
            sink,
        }));
        id
    }

    /// Removes a subscriber (a no-op when it is already gone).
    pub fn unsubscribe(&self, id: SubscriptionId) {
        lock(&self.subscribers).retain(|s| s.id != id);
    }

    /// Sends `event` to every subscriber of its kind; returns how many took it.
    pub fn publish(&self, event: &ServerEvent) -> usize {
        let kind = event.kind();
        // Deliver outside the lock: a sink may take a moment, and a sink may
        // itself subscribe or publish.
        let targets: Vec<Arc<Subscriber>> = lock(&self.subscribers)
            .iter()
            .filter(|s| s.kinds.contains(&kind))
            .cloned()
            .collect();
        let mut gone = Vec::new();
        let mut delivered = 0;
        for subscriber in &targets {
            let reply = Reply::new(subscriber.request.clone(), Response::Event(event.clone()));
            if subscriber.sink.deliver(reply) {
                delivered += 1;
            } else {
                gone.push(subscriber.id);
            }
        }
        if !gone.is_empty() {
            lock(&self.subscribers).retain(|s| !gone.contains(&s.id));
        }
        delivered
    }

    /// Subscribers now (some may be gone without having been told yet).
    pub fn len(&self) -> usize {
        lock(&self.subscribers).len()
    }

    /// Whether nobody listens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[derive(Default)]
    struct Collect {
        replies: Mutex<Vec<Reply>>,
        gone: AtomicBool,
    }

    impl ReplySink for Collect {
        fn deliver(&self, reply: Reply) -> bool {
            lock(&self.replies).push(reply);
            !self.gone.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn events_reach_matching_subscribers_until_they_leave() {
        let bus = EventBus::default();
        let all = Arc::new(Collect::default());
        let low = Arc::new(Collect::default());
        bus.subscribe(RequestId::text("a"), EventKind::ALL.to_vec(), all.clone());
        bus.subscribe(
            RequestId::text("l"),
            vec![EventKind::LowMemory],
            low.clone(),
        );
        let loaded = ServerEvent::ModelLoaded { model: "m".into() };
        assert_eq!(bus.publish(&loaded), 1);
        let memory = ServerEvent::LowMemory {
            available_bytes: 1,
            total_bytes: 2,
        };
        assert_eq!(bus.publish(&memory), 2);
        assert_eq!(lock(&all.replies).len(), 2);
        let reply = lock(&low.replies)[0].clone();
        assert_eq!(reply.id, RequestId::text("l"));
        assert!(!reply.response.is_final());

        all.gone.store(true, Ordering::Relaxed);
        assert_eq!(bus.publish(&memory), 1);
        assert_eq!(bus.len(), 1);
    }
}
