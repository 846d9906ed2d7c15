//! The producer side: submit work to a cluster, optionally await its reply.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage as Publish};
use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Reason, RemoteError};
use crate::topology::{Topology, is_token};
use crate::{HEADER_ONCE, HEADER_REASON, HEADER_REPLY_TO, HEADER_STATUS};

/// One unit of work for a cluster: a handler name and its payload.
///
/// ```
/// let job = tasker_nats::Job::new("resize", &b"cat.png"[..]).priority().id("upload-17");
/// assert_eq!(job.handler(), "resize");
/// ```
#[derive(Debug, Clone)]
pub struct Job {
    handler: String,
    payload: Bytes,
    priority: bool,
    once: bool,
    id: Option<String>,
}

impl Job {
    /// Work for handler `name` with `payload`. At least once, normal lane, no id.
    pub fn new(name: &str, payload: impl Into<Bytes>) -> Self {
        Job {
            handler: name.to_owned(),
            payload: payload.into(),
            priority: false,
            once: false,
            id: None,
        }
    }

    /// On the priority lane: the node's manager runs it before its queued normal tasks.
    pub fn priority(mut self) -> Self {
        self.priority = true;
        self
    }

    /// At most once: acknowledged before the handler runs, never redelivered or retried.
    pub fn at_most_once(mut self) -> Self {
        self.once = true;
        self
    }

    /// A message id: a second job with the same id within the stream's duplicate window is
    /// not queued again ([`Error::Duplicate`]).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The handler's name.
    pub fn handler(&self) -> &str {
        &self.handler
    }
}

/// Where the server stored a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The job's sequence in the work stream.
    pub sequence: u64,
}

/// Submits jobs to a cluster's stream.
///
/// Every submission waits for the server's confirmation that the job is stored (so a job
/// `submit` returned `Ok` for is never lost). [`request`](Self::request) also waits for the
/// node's reply: the handler's bytes, or a [`RemoteError`].
#[derive(Debug, Clone)]
pub struct Producer {
    client: async_nats::Client,
    js: jetstream::Context,
    topology: Topology,
}

impl Producer {
    /// A producer for `topology` over `client`. Call [`Topology::ensure`] (or start a node)
    /// first so the stream exists.
    pub fn new(client: async_nats::Client, topology: Topology) -> Self {
        let js = jetstream::new(client.clone());
        Producer {
            client,
            js,
            topology,
        }
    }

    /// The JetStream context this producer publishes through.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Queues `job` and waits until the server has stored it.
    pub async fn submit(&self, job: Job) -> Result<Submitted, Error> {
        self.publish(job, None).await
    }

    /// Queues `job` with a reply subject and waits up to `timeout` for the reply. An
    /// at-least-once job that ran twice (its node died before acking) replies twice; the
    /// first reply is returned.
    pub async fn request(
        &self,
        job: Job,
        timeout: Duration,
    ) -> Result<Result<Bytes, RemoteError>, Error> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(Error::nats)?;
        self.publish(job, Some(inbox)).await?;
        let reply = tokio::time::timeout(timeout, sub.next())
            .await
            .map_err(|_| Error::TimedOut)?
            .ok_or(Error::TimedOut)?;
        let _ = sub.unsubscribe().await;
        let headers = reply.headers.as_ref();
        let get = |n: &str| headers.and_then(|h| h.get(n)).map(|v| v.as_str());
        if get(HEADER_STATUS) == Some("ok") {
            return Ok(Ok(reply.payload));
        }
        Ok(Err(RemoteError {
            reason: get(HEADER_REASON)
                .and_then(Reason::parse)
                .unwrap_or(Reason::Failed),
            message: String::from_utf8_lossy(&reply.payload).into_owned(),
        }))
    }

    async fn publish(&self, job: Job, reply_to: Option<String>) -> Result<Submitted, Error> {
        if !is_token(&job.handler) {
            return Err(Error::InvalidName(job.handler));
        }
        let subject = if job.priority {
            self.topology.priority_subject(&job.handler)
        } else {
            self.topology.normal_subject(&job.handler)
        };
        let mut h = HeaderMap::new();
        if job.once {
            h.insert(HEADER_ONCE, "1");
        }
        if let Some(to) = reply_to {
            h.insert(HEADER_REPLY_TO, to.as_str());
        }
        let mut publish = Publish::build().payload(job.payload).headers(h);
        if let Some(id) = job.id {
            publish = publish.message_id(id);
        }
        let ack = self
            .js
            .send_publish(subject, publish)
            .await
            .map_err(Error::nats)?
            .await
            .map_err(Error::nats)?;
        if ack.duplicate {
            return Err(Error::Duplicate {
                sequence: ack.sequence,
            });
        }
        Ok(Submitted {
            sequence: ack.sequence,
        })
    }
}
