//! The agent's typed errors. A job's error becomes its result text only at the edge
//! (the result sent to the controller); inside, a controller refusal keeps its gRPC code,
//! so callers can tell a passing fault from a refusal.

use tonic::Code;

/// What went wrong in the agent's work.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The controller refused or failed a call: the code is kept.
    #[error("{what}: {message}")]
    Controller {
        what: String,
        code: Code,
        message: String,
    },
    /// The agent is stopping; the job is reported again after the restart.
    #[error("{what}: the agent is shutting down")]
    ShuttingDown { what: String },
    /// Anything else, with its context in the text (PostgreSQL, client tools, files,
    /// keys, verification).
    #[error("{0}")]
    Failed(String),
}

impl AgentError {
    /// The gRPC code of a controller refusal.
    pub fn code(&self) -> Option<Code> {
        match self {
            AgentError::Controller { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A controller refusal of `what`.
    pub fn controller(what: &str, s: &tonic::Status) -> Self {
        AgentError::Controller {
            what: what.into(),
            code: s.code(),
            message: s.message().into(),
        }
    }
}

impl From<String> for AgentError {
    fn from(s: String) -> Self {
        AgentError::Failed(s)
    }
}

impl From<&str> for AgentError {
    fn from(s: &str) -> Self {
        AgentError::Failed(s.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_code_and_names_the_call() {
        let e = AgentError::controller(
            "commit snapshot",
            &tonic::Status::failed_precondition("job j is no longer running"),
        );
        assert_eq!(e.code(), Some(Code::FailedPrecondition));
        assert_eq!(e.to_string(), "commit snapshot: job j is no longer running");
        assert_eq!(AgentError::from("disk full").code(), None);
    }
}
