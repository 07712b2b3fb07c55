//! One Data stream of a running session: output from the session's log
//! goes up, from the offset the server says it has, under credit; input
//! and resizes come down; the exit status goes last. When the stream
//! breaks, the session keeps running and the next stream carries on where
//! the server left off.

use futures::{Stream, StreamExt as _};
use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::{
    DataOpen, HostDataRequest, HostDataResponse, host_data_request, host_data_response,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::live::LiveSession;
use super::{DATA_QUEUE_MESSAGES, READ_CHUNK_BYTES, STREAM_FINISH_TIMEOUT};
use crate::credit::Credit;
use crate::guests::GuestsTx;
use crate::pty::PtySize;

/// How a Data stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The exit status went up: the session is over.
    Finished,
    /// The stream broke or was refused for a reason that may pass (the
    /// connection is gone): the session keeps running.
    Broken,
    /// The server does not have the session (any more), or the host
    /// cannot continue it from where the server is: end it.
    Gone(String),
}

/// Opens a Data stream for `live` and relays it until it ends.
pub(crate) async fn run(
    mut client: HostServiceClient<Channel>,
    mut open: DataOpen,
    live: &LiveSession,
    guests: &GuestsTx,
) -> StreamEnd {
    let session_id = live.id.clone();
    // What was taken before counts: the server sends the input after it.
    open.input_applied = live.input_received();
    let (outbound, requests) = mpsc::channel(DATA_QUEUE_MESSAGES);
    // The queue is empty and its receiver alive: this cannot fail.
    let _ = outbound.try_send(HostDataRequest {
        message: Some(host_data_request::Message::Open(open)),
    });
    let inbound = match client.data(ReceiverStream::new(requests)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::warn!(
                session_id,
                code = ?status.code(),
                message = status.message(),
                "the server refused the session's data stream"
            );
            return match status.code() {
                tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
                    StreamEnd::Gone(status.message().to_owned())
                }
                _ => StreamEnd::Broken,
            };
        }
    };
    let end = relay(&session_id, live, outbound, inbound, guests).await;
    if end != StreamEnd::Finished {
        live.log.send_modify(|log| log.disconnected());
    }
    end
}

/// Relays one Data stream (`outbound` up, `inbound` down) for `live`.
pub(crate) async fn relay<S>(
    session_id: &str,
    live: &LiveSession,
    outbound: mpsc::Sender<HostDataRequest>,
    mut inbound: S,
    guests: &GuestsTx,
) -> StreamEnd
where
    S: Stream<Item = Result<HostDataResponse, tonic::Status>> + Unpin,
{
    let send = |message| {
        outbound.send(HostDataRequest {
            message: Some(message),
        })
    };
    // The server's first word: where its output ends.
    let first = match timeout(STREAM_FINISH_TIMEOUT * 2, inbound.next()).await {
        Ok(Some(Ok(message))) => message.message,
        Ok(Some(Err(status))) => {
            tracing::info!(session_id, %status, "data stream ended before it began");
            return StreamEnd::Broken;
        }
        Ok(None) | Err(_) => return StreamEnd::Broken,
    };
    let Some(host_data_response::Message::OutputAck(start)) = first else {
        return StreamEnd::Gone("the server did not say where the session's output ends".into());
    };
    let connected = live.log.send_if_modified(|log| log.connected(start));
    if !connected {
        let (kept, end) = {
            let log = live.log.borrow();
            (log.start(), log.end())
        };
        return StreamEnd::Gone(format!(
            "the server has the output up to offset {start}; this host keeps {kept}..{end}"
        ));
    }
    let mut credit = Credit::starting_at(start);
    let mut sent = start;
    let mut log = live.log.subscribe();
    let mut written = live.input_written.clone();
    written.mark_changed();
    let mut input_open = true;
    loop {
        // Output first, while there is credit.
        if credit.available() {
            let (data, exit) = {
                let log = log.borrow_and_update();
                let data = log.read(sent, READ_CHUNK_BYTES);
                let exit = (data.is_none() && sent >= log.end())
                    .then(|| log.exit.clone())
                    .flatten();
                (data, exit)
            };
            if let Some(data) = data {
                let len = data.len();
                if send(host_data_request::Message::Output(data))
                    .await
                    .is_err()
                {
                    return StreamEnd::Broken;
                }
                credit.sent(len);
                sent += len as u64;
                continue;
            }
            if let Some(exit) = exit {
                if send(host_data_request::Message::Exit(exit)).await.is_err() {
                    return StreamEnd::Broken;
                }
                // Input that arrives now has no process to go to; wait for
                // the server to end the stream, then the session is over.
                let drain = async { while let Some(Ok(_)) = inbound.next().await {} };
                let _ = timeout(STREAM_FINISH_TIMEOUT, drain).await;
                return StreamEnd::Finished;
            }
        }
        tokio::select! {
            biased;
            message = inbound.next() => match message {
                Some(Ok(message)) => match message.message {
                    Some(host_data_response::Message::OutputAck(offset)) => {
                        credit.acked(offset);
                        live.log.send_modify(|log| log.confirm(offset));
                    }
                    Some(host_data_response::Message::Input(data)) => {
                        guests.input();
                        live.count_input(message.input_origin.as_ref());
                        if live.input.send(data).await.is_err() {
                            // The session is ending; its exit comes next.
                        }
                    }
                    Some(host_data_response::Message::Resize(size)) => {
                        live.size.send_replace(PtySize::from_wire(size.cols, size.rows));
                    }
                    // A message newer than this host.
                    None => {}
                },
                Some(Err(status)) => {
                    tracing::info!(
                        session_id,
                        code = ?status.code(),
                        message = status.message(),
                        "data stream ended with an error"
                    );
                    return StreamEnd::Broken;
                }
                None => return StreamEnd::Broken,
            },
            changed = written.changed(), if input_open => {
                if changed.is_err() {
                    // The writer is gone with the session; the exit follows.
                    input_open = false;
                    continue;
                }
                let count = *written.borrow_and_update();
                if send(host_data_request::Message::InputAck(count)).await.is_err() {
                    return StreamEnd::Broken;
                }
            }
            changed = log.changed() => {
                if changed.is_err() {
                    return StreamEnd::Broken;
                }
            }
        }
    }
}
