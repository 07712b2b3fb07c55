//! The `Attach` call's guest (the browser's path): the event stream, and
//! unary calls for input, resizes and acknowledgements.

use std::fmt;

use bytes::Bytes;
use rendezvous_proto::v1::guest_service_client::GuestServiceClient;
use rendezvous_proto::v1::{AckRequest, Attached, ResizeRequest, SendInputRequest};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::{Client, MAX_INPUT_CHUNK_BYTES};
use crate::error::GuestError;
use crate::events::{Event, EventReader, Progress};

/// Sends each new [`Progress`] of an `Attach` stream as an `Ack` call,
/// until the stream's reader is dropped. A failed call is not retried:
/// the next one carries everything it did.
pub(super) async fn send_acks(
    mut client: GuestServiceClient<Channel>,
    guest_id: String,
    guest_token: String,
    route: Route,
    mut acks: watch::Receiver<Progress>,
) {
    while acks.changed().await.is_ok() {
        let progress = *acks.borrow_and_update();
        let request = AckRequest {
            guest_id: guest_id.clone(),
            guest_token: guest_token.clone(),
            offset: progress.offset,
            messages: progress.messages,
            task_id: route.task_id.clone(),
            host_name: route.host_name.clone(),
        };
        if client.ack(request).await.is_err() {
            // The stream is over or the connection broken: the reader
            // sees that itself.
            return;
        }
    }
}

/// A guest attached over the server-streaming `Attach` call, with unary
/// calls for input and resizes (the browser's path).
#[derive(Debug)]
pub struct AttachStream {
    pub(super) writer: UnaryWriter,
    pub(super) events: EventReader,
}

impl AttachStream {
    /// The `Attached` event: session ID, guest ID and token, role, host.
    pub fn attached(&self) -> &Attached {
        self.events.attached()
    }

    /// Sends input bytes; see [`UnaryWriter::send_input`].
    ///
    /// # Errors
    /// As for [`UnaryWriter::send_input`].
    pub async fn send_input(&mut self, data: impl Into<Bytes>) -> Result<(), GuestError> {
        self.writer.send_input(data).await
    }

    /// Reports a new terminal size; see [`UnaryWriter::resize`].
    ///
    /// # Errors
    /// As for [`UnaryWriter::resize`].
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), GuestError> {
        self.writer.resize(cols, rows).await
    }

    /// The next event; see [`EventReader::next_event`].
    ///
    /// # Errors
    /// As for [`EventReader::next_event`].
    pub async fn next_event(&mut self) -> Result<Option<Event>, GuestError> {
        self.events.next_event().await
    }

    /// The writing half and the reading half.
    pub fn split(self) -> (UnaryWriter, EventReader) {
        (self.writer, self.events)
    }
}

/// Sends one guest's input and resizes as unary calls, numbering input
/// requests 0, 1, 2, ... so the server applies them in order, exactly once.
pub struct UnaryWriter {
    /// The connection the calls go over.
    pub(super) client: Client,
    /// From `Attached`.
    pub(super) guest_id: String,
    /// From `Attached`; a capability, never printed.
    pub(super) guest_token: String,
    /// Where the session is, for a replica that does not relay this
    /// guest's stream.
    pub(super) route: Route,
    /// Sequence number of the next `SendInput`; advanced after each success.
    pub(super) next_seq: u64,
}

/// The task ID and host name a guest's unary calls carry, so that any
/// replica can route them to the one that holds the host (see the
/// `SendInputRequest.task_id` field).
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) task_id: String,
    pub(super) host_name: String,
}

impl UnaryWriter {
    /// Sends input bytes in requests of at most [`MAX_INPUT_CHUNK_BYTES`],
    /// one sequence number each. On an error, the chunks before the failed
    /// one have been applied, and [`next_seq`](Self::next_seq) is the failed
    /// one's number, so a retry with [`Client::send_input`] stays exactly
    /// once.
    ///
    /// # Errors
    /// As for [`Client::send_input`].
    pub async fn send_input(&mut self, data: impl Into<Bytes>) -> Result<(), GuestError> {
        let mut data = data.into();
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_INPUT_CHUNK_BYTES));
            self.client
                .send_input_request(SendInputRequest {
                    guest_id: self.guest_id.clone(),
                    guest_token: self.guest_token.clone(),
                    seq: self.next_seq,
                    data: chunk,
                    task_id: self.route.task_id.clone(),
                    host_name: self.route.host_name.clone(),
                })
                .await?;
            self.next_seq += 1;
        }
        Ok(())
    }

    /// Reports a new terminal size in character cells.
    ///
    /// # Errors
    /// As for [`Client::resize`].
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), GuestError> {
        self.client
            .resize_request(ResizeRequest {
                guest_id: self.guest_id.clone(),
                guest_token: self.guest_token.clone(),
                cols,
                rows,
                task_id: self.route.task_id.clone(),
                host_name: self.route.host_name.clone(),
            })
            .await
    }

    /// The sequence number the next input request will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

impl fmt::Debug for UnaryWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnaryWriter")
            .field("guest_id", &self.guest_id)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}
