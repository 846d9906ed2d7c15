//! The default logger emits each lifecycle event as a structured `tracing` event, target
//! `tasker`, whose fields (`kind`, `worker`, `error`, `retry_in_ms`, ...) a subscriber can
//! filter on. A minimal subscriber installed as the global default records them: workers log
//! from their own threads. One test in this binary: the global default is set once.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tasker::TaskManager;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded event: its level, target, and every field as text.
#[derive(Debug, Clone)]
struct Recorded {
    level: Level,
    target: String,
    fields: HashMap<String, String>,
}

/// Records every event; spans are not used by tasker.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Recorded>>>, Arc<AtomicU64>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.1.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Recorded {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[derive(Debug)]
struct Refused;

#[test]
fn lifecycle_events_are_structured_tracing_events_with_the_error() {
    let record = Recorder::default();
    tracing::subscriber::set_global_default(record.clone()).unwrap();

    // The worker's first resource is made, its replacement fails once (refused), then works.
    let calls = Arc::new(AtomicUsize::new(0));
    let m = TaskManager::builder()
        .on_create(move || {
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                Err(Refused)
            } else {
                Ok(())
            }
        })
        .on_destroy(|()| Err(Refused))
        .check_health(|_| false)
        .error_formatter(|e| format!("{e:?}: connection refused"))
        .pin_workers(false)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(1)
        .build()
        .unwrap();
    let outcome = m.queue_task(|_, ctx| {
        if ctx.attempt() == 1 {
            Err(Refused)
        } else {
            Ok(ctx.attempt())
        }
    });
    assert_eq!(outcome.ok(), Some(2));
    m.stop().unwrap();

    let events = record.0.lock().unwrap().clone();
    let of = |kind: &str| -> Vec<Recorded> {
        events
            .iter()
            .filter(|e| {
                e.target == "tasker" && e.fields.get("kind").map(String::as_str) == Some(kind)
            })
            .cloned()
            .collect()
    };
    let failed = of("create_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    let f = &failed[0].fields;
    assert_eq!(failed[0].level, Level::WARN);
    assert_eq!(f.get("worker").map(String::as_str), Some("0"));
    assert_eq!(
        f.get("error").map(String::as_str),
        Some("Refused: connection refused")
    );
    assert!(f.contains_key("retry_in_ms"), "{f:?}");
    assert!(
        f.get("message")
            .is_some_and(|m| m.contains("on_create failed")),
        "{f:?}"
    );
    // Fields that do not apply are absent, not empty.
    assert!(!f.contains_key("panic") && !f.contains_key("core"), "{f:?}");

    let replaced = of("resource_replaced");
    assert_eq!(replaced.len(), 1, "{events:#?}");
    assert_eq!(replaced[0].level, Level::INFO);
    let r = &replaced[0].fields;
    assert_eq!(r.get("reason").map(String::as_str), Some("unhealthy_error"));
    assert_eq!(
        r.get("error").map(String::as_str),
        Some("Refused: connection refused")
    );

    let retried = of("task_retried");
    assert_eq!(retried.len(), 1, "{events:#?}");
    assert_eq!(retried[0].level, Level::DEBUG);
    assert_eq!(
        retried[0].fields.get("attempt").map(String::as_str),
        Some("1")
    );

    // Both resources' on_destroy failed: the replaced one and the last one.
    let destroy = of("destroy_failed");
    assert_eq!(destroy.len(), 2, "{events:#?}");
    for d in &destroy {
        assert_eq!(
            d.fields.get("error").map(String::as_str),
            Some("Refused: connection refused")
        );
    }
    let shutdown = of("shutdown_begun");
    assert_eq!(shutdown.len(), 1, "{events:#?}");
    assert_eq!(
        shutdown[0].fields.get("reason").map(String::as_str),
        Some("stop")
    );
}
