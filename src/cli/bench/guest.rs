//! Guests as the bench drives them: the raw generated client, each guest on
//! its own connection (own Channel), as separate people would be.

use std::time::Duration;

use anyhow::{Context, bail};
use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use rendezvous_proto::{
    AttachRequest, Attached, GuestEvent, TerminalRequest, guest_event, terminal_request,
};
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

use super::util::channel_stream;

/// How long the bench waits for a connection and an Attached (10 s).
const WAIT: Duration = Duration::from_secs(10);

/// Requests queued toward the server on a Terminal stream.
const TERMINAL_QUEUE_MESSAGES: usize = 16;

/// Where a guest attaches: a task, its secret, a host name (empty for the
/// default host) and a session to join (`None` for a new shell).
#[derive(Debug, Clone)]
pub struct Target {
    pub task_id: String,
    pub secret: String,
    pub host_name: String,
    pub session_id: Option<String>,
}

impl Target {
    /// The same host, session `id`.
    pub fn join(&self, id: &str) -> Self {
        Self {
            session_id: Some(id.to_owned()),
            ..self.clone()
        }
    }

    fn request(&self) -> AttachRequest {
        AttachRequest {
            task_id: self.task_id.clone(),
            secret: self.secret.clone(),
            host_name: self.host_name.clone(),
            session_id: self.session_id.clone().unwrap_or_default(),
            cols: 80,
            rows: 24,
            resume_offset: None,
            ..Default::default()
        }
    }
}

/// Opens a new connection to `url` for one guest.
pub async fn connect(url: &str) -> anyhow::Result<GuestServiceClient<Channel>> {
    let channel = tokio::time::timeout(WAIT, rendezvous_proto::endpoint::endpoint(url)?.connect())
        .await
        .context("no connection within 10 s")?
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(GuestServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

async fn first_attached(events: &mut Streaming<GuestEvent>) -> anyhow::Result<Attached> {
    match tokio::time::timeout(WAIT, events.message())
        .await
        .context("no Attached within 10 s")??
    {
        Some(GuestEvent {
            event: Some(guest_event::Event::Attached(a)),
        }) => Ok(a),
        other => bail!("expected Attached, got {other:?}"),
    }
}

/// Attaches with the server-streaming `Attach` RPC (the browsers' path).
pub async fn attach(
    client: &mut GuestServiceClient<Channel>,
    target: &Target,
) -> anyhow::Result<(Attached, Streaming<GuestEvent>)> {
    let mut events = tokio::time::timeout(WAIT, client.attach(target.request()))
        .await
        .context("no answer to Attach within 10 s")??
        .into_inner();
    let attached = first_attached(&mut events).await?;
    Ok((attached, events))
}

/// A guest on the bidi `Terminal` RPC (the native guests' path).
#[derive(Debug)]
pub struct TerminalGuest {
    pub attached: Attached,
    pub input: mpsc::Sender<TerminalRequest>,
    pub events: Streaming<GuestEvent>,
}

impl TerminalGuest {
    /// Attaches over `Terminal`.
    pub async fn open(
        client: &mut GuestServiceClient<Channel>,
        target: &Target,
    ) -> anyhow::Result<Self> {
        let (input, rx) = mpsc::channel(TERMINAL_QUEUE_MESSAGES);
        input.try_send(TerminalRequest {
            message: Some(terminal_request::Message::Attach(target.request())),
        })?;
        let mut events = tokio::time::timeout(WAIT, client.terminal(channel_stream(rx)))
            .await
            .context("no answer to Terminal within 10 s")??
            .into_inner();
        let attached = first_attached(&mut events).await?;
        Ok(Self {
            attached,
            input,
            events,
        })
    }

    /// Sends input bytes on the stream.
    pub async fn send_input(&self, data: bytes::Bytes) -> anyhow::Result<()> {
        self.input
            .send(TerminalRequest {
                message: Some(terminal_request::Message::Input(data)),
            })
            .await
            .context("the Terminal stream has closed")
    }
}
