//! Errors of the bridge.

use std::fmt;

/// Why a bridge call failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The NATS client or the JetStream API refused (connection, permissions, server).
    Nats(Box<dyn std::error::Error + Send + Sync>),
    /// A name that must be one subject token was not (empty, or with `.`, `*`, `>`, spaces).
    InvalidName(String),
    /// A setting out of range.
    InvalidConfig(&'static str),
    /// A request got no reply in time.
    TimedOut,
    /// The stream already held a message with this id (within the duplicate window): it was
    /// not queued again.
    Duplicate {
        /// The stream sequence of the message already stored.
        sequence: u64,
    },
}

impl Error {
    pub(crate) fn nats(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Nats(Box::new(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Nats(e) => write!(f, "nats: {e}"),
            Error::InvalidName(n) => write!(f, "not a single subject token: {n:?}"),
            Error::InvalidConfig(what) => write!(f, "invalid setting: {what}"),
            Error::TimedOut => f.write_str("no reply in time"),
            Error::Duplicate { sequence } => {
                write!(
                    f,
                    "duplicate message id (already stored at sequence {sequence})"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Nats(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Why a remote task did not produce a value, as told by a reply or a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The handler returned a healthy error (no retry anywhere).
    Failed,
    /// The handler panicked (at-most-once messages; at-least-once ones are given back and end
    /// [`MaxDeliver`](Self::MaxDeliver) if they keep panicking).
    Panicked,
    /// The cluster-wide delivery limit ran out (unhealthy errors or panics on every delivery,
    /// or nodes dying while holding it).
    MaxDeliver,
    /// No handler of that name on the node that took it.
    UnknownHandler,
    /// An at-most-once message was acknowledged but its node shut down before running it.
    NotRun,
}

impl Reason {
    /// The header value for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Failed => "failed",
            Reason::Panicked => "panicked",
            Reason::MaxDeliver => "max-deliver",
            Reason::UnknownHandler => "unknown-handler",
            Reason::NotRun => "not-run",
        }
    }

    /// The reason named by a header value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "failed" => Reason::Failed,
            "panicked" => Reason::Panicked,
            "max-deliver" => Reason::MaxDeliver,
            "unknown-handler" => Reason::UnknownHandler,
            "not-run" => Reason::NotRun,
            _ => return None,
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A remote task's failure, as carried by a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// Why it failed.
    pub reason: Reason,
    /// The error's text (its `Display`), or the panic message.
    pub message: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for RemoteError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_header_value() {
        for r in [
            Reason::Failed,
            Reason::Panicked,
            Reason::MaxDeliver,
            Reason::UnknownHandler,
            Reason::NotRun,
        ] {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("other"), None);
    }
}
