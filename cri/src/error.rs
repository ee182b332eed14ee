//! The CRI server's errors, and how they reach callers as gRPC statuses. The codes are
//! the ones crictl and the kubelet act on (NotFound, InvalidArgument, ...); every
//! message names the object and the cause.

/// An error of a CRI operation.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CriError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    /// An exec ran past its timeout (probes report it as a timeout).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// containerd or a registry could not be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = CriError> = std::result::Result<T, E>;

impl CriError {
    /// Wraps a failed containerd call: `what` says what was being done, to which object.
    pub fn containerd(what: impl std::fmt::Display, status: tonic::Status) -> Self {
        let msg = format!("{what}: containerd: {}", status.message());
        match status.code() {
            tonic::Code::NotFound => CriError::NotFound(msg),
            tonic::Code::AlreadyExists => CriError::AlreadyExists(msg),
            tonic::Code::InvalidArgument => CriError::InvalidArgument(msg),
            tonic::Code::FailedPrecondition => CriError::FailedPrecondition(msg),
            tonic::Code::Unavailable => CriError::Unavailable(msg),
            _ => CriError::Internal(msg),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::NotFound(_))
    }
}

impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> Self {
        match e {
            CriError::NotFound(m) => tonic::Status::not_found(m),
            CriError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            CriError::AlreadyExists(m) => tonic::Status::already_exists(m),
            CriError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            CriError::Unimplemented(m) => tonic::Status::unimplemented(m),
            CriError::Unavailable(m) => tonic::Status::unavailable(m),
            CriError::DeadlineExceeded(m) => tonic::Status::deadline_exceeded(m),
            CriError::Internal(m) => tonic::Status::internal(m),
        }
    }
}
