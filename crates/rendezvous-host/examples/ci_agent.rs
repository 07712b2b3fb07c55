use rendezvous_host::{Host, HostStatus};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = Host::builder("https://rendezvous.example.com")
        .task_id("build-1234")
        .command("bash", ["-l"])
        .env("CI", "true")
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
    // Runs until the job ends; then every shell's process group is killed.
    host.run(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
