//! Smoke test of `rendezvous bench --quick`: it runs to the end by itself
//! and its JSON report has every documented key. It checks that the keys
//! are there, not how fast anything is.

use std::process::Command;

use serde_json::Value;

/// The documented keys, as paths; `fanout[]` is an array of objects.
const KEYS: &[&str] = &[
    "single.relay_mib_s",
    "single.baseline_mib_s",
    "fanout[].guests",
    "fanout[].per_guest_mib_s",
    "fanout[].aggregate_mib_s",
    "rtt_us.relay_p50",
    "rtt_us.relay_p99",
    "rtt_us.baseline_p50",
    "rtt_us.baseline_p99",
    "memory.rss_kib_per_idle_host",
    "memory.rss_kib_per_idle_guest",
];

/// The values at `path` in `json`: one per element for `name[]` parts.
fn lookup<'a>(json: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut values = vec![json];
    for part in path.split('.') {
        values = values
            .into_iter()
            .flat_map(|v| match part.strip_suffix("[]") {
                Some(array) => match v.get(array) {
                    Some(Value::Array(items)) => items.iter().collect(),
                    _ => Vec::new(),
                },
                None => v.get(part).into_iter().collect(),
            })
            .collect();
    }
    values
}

#[test]
fn bench_quick_writes_every_json_key() {
    let json_path = std::env::temp_dir().join(format!(
        "rendezvous-bench-smoke-{}.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["bench", "--quick", "--json"])
        .arg(&json_path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rendezvous bench");
    assert!(
        output.status.success(),
        "bench failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json_path).expect("read the JSON report");
    let _ = std::fs::remove_file(&json_path);
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");

    let fanout = json["fanout"].as_array().expect("fanout is an array");
    let guests: Vec<u64> = fanout.iter().filter_map(|f| f["guests"].as_u64()).collect();
    assert_eq!(guests, [1, 10, 100], "fan-out runs in {text}");
    for key in KEYS {
        let values = lookup(&json, key);
        assert!(!values.is_empty(), "missing {key} in {text}");
        assert!(
            values.iter().all(|v| v.is_number()),
            "{key} is not a number in {text}"
        );
    }
    // The table went to stdout.
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("targets"), "no table in:\n{table}");
}

/// The documented keys of `bench scale --json`.
const SCALE_KEYS: &[&str] = &[
    "steps[].sessions",
    "steps[].guests",
    "steps[].keystrokes",
    "steps[].rtt_ms.p50",
    "steps[].rtt_ms.p99",
    "steps[].rtt_ms.max",
    "steps[].output_bytes_per_s_per_session",
    "steps[].cpu_percent.server",
    "steps[].cpu_percent.hosts",
    "steps[].cpu_percent.guests",
    "steps[].server_rss_mib",
    "printed_bytes",
    "received_bytes",
    "keystrokes",
    "coder_sessions",
];

/// `bench scale` with its own child server, two short steps: it ends by
/// itself, every guest got every byte, and the report has every key.
#[test]
fn bench_scale_runs_its_own_server_and_writes_every_json_key() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let json_path = dir.path().join("scale.json");
    let output = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["bench", "scale", "--steps", "10,20", "--step-secs", "2"])
        .args(["--settle-secs", "0", "--all-steps", "--json"])
        .arg(&json_path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rendezvous bench scale");
    assert!(
        output.status.success(),
        "bench scale failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json_path).expect("read the JSON report");
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");
    for key in SCALE_KEYS {
        let values = lookup(&json, key);
        assert!(!values.is_empty(), "missing {key} in {text}");
        assert!(
            values.iter().all(|v| v.is_number()),
            "{key} is not a number in {text}"
        );
    }
    let steps: Vec<u64> = lookup(&json, "steps[].sessions")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(steps, [10, 20], "{text}");
    let printed = json["printed_bytes"].as_u64().unwrap();
    assert!(printed > 0, "{text}");
    assert_eq!(json["received_bytes"].as_u64(), Some(printed), "{text}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("held:"), "no verdict in:\n{table}");
}

/// `bench replicas` starts its own redis-server and two replicas, and
/// reports both round trips: the guest through B was relayed to the host
/// on A (its round trips could not complete otherwise).
#[test]
fn bench_replicas_reports_the_round_trip_through_another_replica() {
    let json_path = std::env::temp_dir().join(format!(
        "rendezvous-bench-replicas-{}.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["bench", "replicas", "--round-trips", "100", "--json"])
        .arg(&json_path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rendezvous bench replicas");
    assert!(
        output.status.success(),
        "bench replicas failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json_path).expect("read the JSON report");
    let _ = std::fs::remove_file(&json_path);
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(json["round_trips"], 100, "{text}");
    for key in ["owner_p50_us", "owner_p99_us", "hop_p50_us", "hop_p99_us"] {
        let value = json[key].as_f64().unwrap_or(f64::NAN);
        assert!(value > 0.0 && value.is_finite(), "{key} in {text}");
    }
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("the hop adds"), "no table in:\n{table}");
}
