use std::time::Duration;

use rendezvous_host::hold::{CONTROL_SOCKET_ENV, ControlSocket, Hold, HoldEnd, HoldOptions};
use rendezvous_host::{Host, HostStatus};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The step failed: `rendezvous continue` and `rendezvous extend` in
    // the shells reach the hold through this socket (mode 0600, in a 0700
    // directory, peer uid checked).
    let socket = ControlSocket::bind_private()?;
    let host = Host::builder("https://rendezvous.example.com")
        .task_id("build-1234")
        .command("bash", ["-l"])
        .env("CI", "true")
        .env(CONTROL_SOCKET_ENV, socket.path())
        .current_dir("/builds/project")
        .label("job", "test-linux")
        .build()?;
    // Show this link in the job's log: the secret is only in the fragment.
    println!("Debug this job: {}", host.guest_url());
    let mut status = host.status();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            if let HostStatus::Reconnecting { after, reason, .. } = &*status.borrow() {
                eprintln!("rendezvous: {reason}; retrying in {after:?}");
            }
        }
    });
    // Hold the job: at most 10 minutes for someone to attach, 5 more after
    // the last one leaves, an hour in all.
    let hold = Hold::new(
        host.guests(),
        HoldOptions {
            wait_for_guest: Some(Duration::from_secs(600)),
            linger: Some(Duration::from_secs(300)),
            max_hold: Some(Duration::from_secs(3600)),
            ..HoldOptions::default()
        },
    );
    let handle = hold.handle();
    let mut end = HoldEnd::HostStopped;
    // Runs until the hold ends; then every shell's process group is killed.
    host.run(async {
        let held = hold.run(|event| println!("rendezvous: {event}"));
        end = socket.serve_until(handle, held).await;
    })
    .await?;
    // The step's exit code, unless a guest ran `rendezvous continue --exit-code N`.
    std::process::exit(end.exit_code().unwrap_or(1));
}
