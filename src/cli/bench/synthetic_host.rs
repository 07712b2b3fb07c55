//! A synthetic host: speaks the host protocol with the raw generated client,
//! with no PTY behind it, so the bench measures the relay and not a shell.
//!
//! - Control stream: Hello, then Registered; Ping is answered with Pong;
//!   OpenSession opens a Data stream for that session.
//! - Data stream: DataOpen first; then whatever output the bench sends
//!   through [`HostSession::send`]; input that arrives is echoed back as
//!   output at once (this is the far end of the keystroke round trip).
//!   Output keeps to the server's output credit and input is acknowledged,
//!   as the real host does (see `rendezvous_proto::flow`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rendezvous_proto::flow::HOST_OUTPUT_CREDIT_MESSAGES;
use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use rendezvous_proto::{
    DataOpen, ExitStatus, Hello, HostControlRequest, HostDataRequest, Pong, exit_status,
    host_control_request, host_control_response, host_data_request, host_data_response,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::util::{Owned, channel_stream};

/// Messages queued toward the server on one Data stream. Small, so that the
/// server's backpressure reaches the sender quickly, as it would reach a PTY
/// reader.
const DATA_QUEUE_MESSAGES: usize = 4;

/// Input messages waiting to be echoed, in messages (the server sends at
/// most its input credit, 16, before an acknowledgement).
const ECHO_QUEUE_MESSAGES: usize = 16;

/// Messages queued toward the server on the Control stream.
const CONTROL_QUEUE_MESSAGES: usize = 16;

/// How long the bench waits for the server to answer Hello or open a
/// session (10 s).
const WAIT: Duration = Duration::from_secs(10);

/// One connected synthetic host. Dropping it closes its Control stream, its
/// sessions' Data streams and its connection.
#[derive(Debug)]
pub struct SyntheticHost {
    sessions: mpsc::UnboundedReceiver<HostSession>,
    pending: HashMap<String, HostSession>,
    _control: Owned,
}

/// One session's Data stream, as the bench drives it.
#[derive(Debug)]
pub struct HostSession {
    id: String,
    output: Output,
}

/// The sending side of a Data stream, within the server's output credit.
#[derive(Debug, Clone)]
struct Output {
    tx: mpsc::Sender<HostDataRequest>,
    credit: Arc<Credit>,
}

/// Output messages the server has not acknowledged yet: a permit each.
#[derive(Debug)]
struct Credit {
    permits: Semaphore,
    /// Bytes sent, and the end offset of each unacknowledged message.
    ledger: Mutex<(u64, VecDeque<u64>)>,
}

impl Output {
    fn new(tx: mpsc::Sender<HostDataRequest>) -> Self {
        let credit = Credit {
            permits: Semaphore::new(HOST_OUTPUT_CREDIT_MESSAGES),
            ledger: Mutex::new((0, VecDeque::new())),
        };
        Self {
            tx,
            credit: Arc::new(credit),
        }
    }

    /// Sends one output message once there is credit for it.
    async fn send(&self, data: Bytes) -> anyhow::Result<()> {
        self.credit
            .permits
            .acquire()
            .await
            .context("the session's Data stream has closed")?
            .forget();
        {
            let mut ledger = self
                .credit
                .ledger
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            ledger.0 += data.len() as u64;
            let end = ledger.0;
            ledger.1.push_back(end);
        }
        self.tx
            .send(HostDataRequest {
                message: Some(host_data_request::Message::Output(data)),
            })
            .await
            .context("the session's Data stream has closed")
    }

    /// The server took output up to `offset`: the messages before it give
    /// their credit back.
    fn acked(&self, offset: u64) {
        let mut ledger = self
            .credit
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut freed = 0;
        while ledger.1.front().is_some_and(|end| *end <= offset) {
            ledger.1.pop_front();
            freed += 1;
        }
        drop(ledger);
        self.credit.permits.add_permits(freed);
    }
}

impl HostSession {
    /// Sends one output message. Waits while the server holds back its
    /// acknowledgements (or HTTP/2 flow control holds the stream): this is
    /// the relay's backpressure.
    pub async fn send(&self, data: Bytes) -> anyhow::Result<()> {
        self.output.send(data).await
    }

    /// Ends the session with exit code 0. Echoes of input that arrives
    /// later are dropped by the server (it reads nothing after an exit), so
    /// a caller that counts echoes stops the input first.
    pub async fn finish(self) {
        let _ = self
            .output
            .tx
            .send(HostDataRequest {
                message: Some(host_data_request::Message::Exit(ExitStatus {
                    status: Some(exit_status::Status::Code(0)),
                    message: String::new(),
                })),
            })
            .await;
    }
}

impl SyntheticHost {
    /// Connects to `url` on its own connection (own Channel), sends Hello
    /// and waits for Registered.
    pub async fn connect(
        url: &str,
        task_id: &str,
        host_name: &str,
        secret: &str,
    ) -> anyhow::Result<Self> {
        let channel = rendezvous_proto::endpoint::endpoint(url)?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let mut client = HostServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE_MESSAGES);
        tx.try_send(HostControlRequest {
            message: Some(host_control_request::Message::Hello(Hello {
                task_id: task_id.to_owned(),
                host_name: host_name.to_owned(),
                secret: secret.to_owned(),
                ..Hello::default()
            })),
        })?;
        let registered = async {
            let mut inbound = client.control(channel_stream(rx)).await?.into_inner();
            match inbound.message().await? {
                Some(rendezvous_proto::HostControlResponse {
                    message: Some(host_control_response::Message::Registered(r)),
                }) => Ok((inbound, r)),
                other => bail!("expected Registered, got {other:?}"),
            }
        };
        let (inbound, registered) = tokio::time::timeout(WAIT, registered)
            .await
            .context("no Registered within 10 s")?
            .with_context(|| format!("host {host_name} of task {task_id} was not registered"))?;
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let control = Owned::spawn(control_loop(
            client,
            tx,
            inbound,
            registered.host_id,
            registered.host_token,
            sessions_tx,
        ));
        Ok(Self {
            sessions,
            pending: HashMap::new(),
            _control: control,
        })
    }

    /// The next session whose Data stream opened, in the order they open;
    /// `None` once the host's Control stream has ended.
    pub async fn next_session(&mut self) -> Option<HostSession> {
        if let Some(id) = self.pending.keys().next().cloned() {
            return self.pending.remove(&id);
        }
        self.sessions.recv().await
    }

    /// Waits until the Data stream of session `id` is open, and hands it
    /// over.
    pub async fn take_session(&mut self, id: &str) -> anyhow::Result<HostSession> {
        if let Some(s) = self.pending.remove(id) {
            return Ok(s);
        }
        let wait = async {
            while let Some(s) = self.sessions.recv().await {
                if s.id == id {
                    return Ok(s);
                }
                self.pending.insert(s.id.clone(), s);
            }
            bail!("the host's Control stream ended")
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .with_context(|| format!("session {id} got no Data stream within 10 s"))?
    }
}

/// Answers Pings and opens a Data stream per OpenSession. Owns the Data
/// streams' tasks: they end with it.
async fn control_loop(
    client: HostServiceClient<Channel>,
    tx: mpsc::Sender<HostControlRequest>,
    mut inbound: tonic::Streaming<rendezvous_proto::HostControlResponse>,
    host_id: String,
    host_token: String,
    sessions: mpsc::UnboundedSender<HostSession>,
) {
    let mut data_tasks = JoinSet::new();
    loop {
        let msg = tokio::select! {
            msg = inbound.message() => msg,
            Some(_) = data_tasks.join_next(), if !data_tasks.is_empty() => continue,
        };
        let Ok(Some(msg)) = msg else { break };
        match msg.message {
            Some(host_control_response::Message::Ping(ping)) => {
                let pong = HostControlRequest {
                    message: Some(host_control_request::Message::Pong(Pong {
                        nonce: ping.nonce,
                    })),
                };
                if tx.send(pong).await.is_err() {
                    break;
                }
            }
            Some(host_control_response::Message::OpenSession(open)) => {
                data_tasks.spawn(data_stream(
                    client.clone(),
                    DataOpen {
                        host_id: host_id.clone(),
                        host_token: host_token.clone(),
                        session_id: open.session_id,
                        input_applied: 0,
                    },
                    sessions.clone(),
                ));
            }
            // The server ends the Data stream itself; nothing to kill.
            Some(host_control_response::Message::CloseSession(_))
            | Some(host_control_response::Message::Registered(_))
            | Some(host_control_response::Message::GuestAttached(_))
            | Some(host_control_response::Message::GuestDetached(_))
            | None => {}
        }
    }
}

/// One session's Data stream: opens it, hands the sending side to the
/// bench, and echoes input back as output until the server ends it.
async fn data_stream(
    mut client: HostServiceClient<Channel>,
    open: DataOpen,
    sessions: mpsc::UnboundedSender<HostSession>,
) {
    let id = open.session_id.clone();
    let (tx, rx) = mpsc::channel(DATA_QUEUE_MESSAGES);
    let _ = tx.try_send(HostDataRequest {
        message: Some(host_data_request::Message::Open(open)),
    });
    let Ok(response) = client.data(channel_stream(rx)).await else {
        return;
    };
    let mut inbound = response.into_inner();
    let output = Output::new(tx);
    if sessions
        .send(HostSession {
            id,
            output: output.clone(),
        })
        .is_err()
    {
        return;
    }
    // Echoes go out from a task of their own: waiting for credit must not
    // stop this loop from reading the acknowledgements that give it back.
    let (echo_tx, mut echo_rx) = mpsc::channel::<Bytes>(ECHO_QUEUE_MESSAGES);
    let echo_output = output.clone();
    let _echo = Owned::spawn(async move {
        let mut inputs = 0u64;
        while let Some(data) = echo_rx.recv().await {
            inputs += 1;
            let ack = HostDataRequest {
                message: Some(host_data_request::Message::InputAck(inputs)),
            };
            if echo_output.send(data).await.is_err() || echo_output.tx.send(ack).await.is_err() {
                return;
            }
        }
    });
    while let Ok(Some(msg)) = inbound.message().await {
        let going = match msg.message {
            Some(host_data_response::Message::Input(data)) => echo_tx.send(data).await.is_ok(),
            Some(host_data_response::Message::OutputAck(offset)) => {
                output.acked(offset);
                true
            }
            _ => true,
        };
        if !going {
            break;
        }
    }
}
