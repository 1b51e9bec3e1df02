//! Callbacks used by Storage API

use std::io;

use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::async_runtime::AsyncOneshotSendExt;
use crate::core::notify::Notify;
use crate::raft_state::io_state::log_io_id::LogIOId;
use crate::type_config::alias::OneshotSenderOf;
use crate::LogId;
use crate::RaftTypeConfig;
use crate::StorageIOError;

/// A oneshot callback for completion of log io operation.
pub struct LogFlushed<C>
where C: RaftTypeConfig
{
    log_io_id: LogIOId<C::NodeId>,
    // DLOG-PATCH: an Option only so that `Drop` can tell a callback dropped
    // uncalled from one that reported.
    tx: Option<FlushedTo<C>>,
}

// DLOG-PATCH: where a flush is reported (see DLOG-PATCH.md).
/// Who waits for a log io operation.
enum FlushedTo<C>
where C: RaftTypeConfig
{
    /// A caller blocked on the operation (a follower's append, which must be
    /// durable before it is acknowledged to the leader).
    Caller(OneshotSenderOf<C, Result<LogIOId<C::NodeId>, io::Error>>),
    /// RaftCore itself, which goes on meanwhile (the leader's own append: the
    /// leader's log is counted in the commit quorum only once this arrives).
    Core(mpsc::UnboundedSender<Notify<C>>),
}

impl<C> LogFlushed<C>
where C: RaftTypeConfig
{
    pub(crate) fn new(
        log_io_id: LogIOId<C::NodeId>,
        tx: OneshotSenderOf<C, Result<LogIOId<C::NodeId>, io::Error>>,
    ) -> Self {
        Self {
            log_io_id,
            tx: Some(FlushedTo::Caller(tx)),
        }
    }

    // DLOG-PATCH
    /// A callback that reports to RaftCore with [`Notify::LocalLogFlushed`].
    pub(crate) fn notify_core(log_io_id: LogIOId<C::NodeId>, tx: mpsc::UnboundedSender<Notify<C>>) -> Self {
        Self {
            log_io_id,
            tx: Some(FlushedTo::Core(tx)),
        }
    }

    /// Report log io completion event.
    ///
    /// It will be called when the log is successfully appended to the storage or an error occurs.
    pub fn log_io_completed(mut self, result: Result<(), io::Error>) {
        if let Err(e) = &result {
            tracing::error!("LogFlush error: {}, while flushing upto {}", e, self.log_io_id);
        }
        let result = result.map(|()| self.log_io_id.clone());
        let sent = match self.tx.take() {
            Some(FlushedTo::Caller(tx)) => tx.send(result).map_err(|_| ()),
            Some(FlushedTo::Core(tx)) => tx.send(Notify::LocalLogFlushed { result }).map_err(|_| ()),
            None => Ok(()),
        };

        if sent.is_err() {
            tracing::error!("failed to send log io completion event: receiver dropped");
        }
    }
}

// DLOG-PATCH: a blocked caller sees a dropped callback as a closed channel,
// an error. RaftCore, which does not wait, is told the same explicitly: a
// leader whose store lost a callback must fail, not lead on uncounted.
impl<C> Drop for LogFlushed<C>
where C: RaftTypeConfig
{
    fn drop(&mut self) {
        if let Some(FlushedTo::Core(tx)) = self.tx.take() {
            let e = io::Error::other(format!("log io callback dropped uncalled, upto {}", self.log_io_id));
            let _ = tx.send(Notify::LocalLogFlushed { result: Err(e) });
        }
    }
}

/// A oneshot callback for completion of applying logs to state machine.
pub struct LogApplied<C>
where C: RaftTypeConfig
{
    last_log_id: LogId<C::NodeId>,
    tx: oneshot::Sender<Result<(LogId<C::NodeId>, Vec<C::R>), StorageIOError<C::NodeId>>>,
}

impl<C> LogApplied<C>
where C: RaftTypeConfig
{
    #[allow(dead_code)]
    pub(crate) fn new(
        last_log_id: LogId<C::NodeId>,
        tx: oneshot::Sender<Result<(LogId<C::NodeId>, Vec<C::R>), StorageIOError<C::NodeId>>>,
    ) -> Self {
        Self { last_log_id, tx }
    }

    /// Report apply io completion event.
    ///
    /// It will be called when the log is successfully applied to the state machine or an error
    /// occurs.
    pub fn completed(self, result: Result<Vec<C::R>, StorageIOError<C::NodeId>>) {
        let res = match result {
            Ok(x) => {
                tracing::debug!("LogApplied upto {}", self.last_log_id);
                let resp = (self.last_log_id.clone(), x);
                self.tx.send(Ok(resp))
            }
            Err(e) => {
                tracing::error!("LogApplied error: {}, while applying upto {}", e, self.last_log_id);
                self.tx.send(Err(e))
            }
        };

        if let Err(_e) = res {
            tracing::error!("failed to send apply complete event, last_log_id: {}", self.last_log_id);
        }
    }
}
