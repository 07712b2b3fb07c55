//! Unary calls (SendInput, Resize, Ack) of a guest this replica does not
//! hold: relayed to the replica that does ([`crate::cluster`]).
//!
//! 1. When this replica relays the guest's stream, the call goes where
//!    the stream goes: a browser's calls share its HTTP/2 connection.
//! 2. Otherwise, when the call names its task and host
//!    (`SendInputRequest.task_id` and `.host_name`, which the browser and
//!    the native client set), the replicas that hold that host name (under
//!    any owner) are asked in turn: for a balancer that spreads one
//!    client's requests over replicas. One directory lookup per call.
//!
//! The replica the call reaches checks the guest ID and token itself; a
//! call that came relayed is never relayed again.

use std::future::Future;

use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::ids::{HostName, TaskId};
use rendezvous_proto::{AckRequest, ResizeRequest, SendInputRequest};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::GuestApi;
use crate::cluster::Relayed;
use crate::status::client_ip;

/// A unary call that names its guest, and where it says its session is.
pub(super) trait UnaryCall: Clone {
    /// The guest ID, task ID and host name it carries.
    fn target(&self) -> (&str, &str, &str);
}

macro_rules! unary_call {
    ($($request:ty),*) => {$(
        impl UnaryCall for $request {
            fn target(&self) -> (&str, &str, &str) {
                (&self.guest_id, &self.task_id, &self.host_name)
            }
        }
    )*};
}
unary_call!(SendInputRequest, ResizeRequest, AckRequest);

impl GuestApi {
    /// Relays `request` for a guest that is not here (`not_here` is this
    /// replica's own answer), or answers `not_here` when no replica can be
    /// found for it.
    ///
    /// # Errors
    /// The holder's answer; `not_here` when there is none (no cluster
    /// link, a relayed call, nothing names the guest's host, or no holder
    /// knows the guest); UNAVAILABLE when the directory or the holder
    /// cannot be reached.
    pub(super) async fn relay_unary<T, R, F, Fut>(
        &self,
        request: Request<T>,
        not_here: Status,
        call: F,
    ) -> Result<Response<R>, Status>
    where
        T: UnaryCall,
        F: Fn(GuestServiceClient<Channel>, Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        if request.extensions().get::<Relayed>().is_some() {
            return Err(not_here);
        }
        let Some(link) = self.registry.cluster().cloned() else {
            return Err(not_here);
        };
        let ip = client_ip(&request);
        let message = request.into_inner();
        let (guest_id, task_id, host_name) = message.target();
        if let Some(url) = link.guest_route(guest_id) {
            return link.unary(&url, message, ip, call).await.map(Response::new);
        }
        let (Ok(task_id), Ok(host_name)) = (TaskId::new(task_id), HostName::new(host_name)) else {
            return Err(not_here);
        };
        let holders = self
            .registry
            .holders_elsewhere(&task_id, &host_name)
            .await?;
        for holder in holders {
            match link
                .unary(&holder.advertise_url, message.clone(), ip, &call)
                .await
            {
                // Another owner's task with the same ID and host name.
                Err(status) if status.code() == Code::Unauthenticated => {}
                answer => return answer.map(Response::new),
            }
        }
        Err(not_here)
    }
}
