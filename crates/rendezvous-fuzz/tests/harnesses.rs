//! Stable runs of every harness: seeded pseudo-random inputs for a bounded
//! time, then every committed regression input.
//!
//! - `RENDEZVOUS_FUZZ_SECS`: seconds of random inputs per harness
//!   (default 10); 0 runs the regression inputs only.
//! - `RENDEZVOUS_FUZZ_SEED`: the seed (default fixed, so that a CI run is
//!   repeatable; a failure names the seed and the input's file).
//!
//! An input that fails is written under the test's temporary directory,
//! and the failure says where: copy it into `regressions/<harness>/` so
//! that it is run from then on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rendezvous_fuzz::{DOCUMENTED, HARNESSES, Harness};

/// Default seconds of random inputs per harness.
const DEFAULT_SECS: u64 = 10;

/// Default seed of the random inputs.
const DEFAULT_SEED: u64 = 0x5eed_1105;

fn harness(name: &str) -> Harness {
    HARNESSES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("no harness {name}"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// Runs `harness` on `input`; on a panic, keeps the input and fails
/// naming where it was kept.
fn run_one(name: &str, harness: Harness, input: &[u8], origin: &str) {
    if catch_unwind(AssertUnwindSafe(|| harness(input))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&dir).expect("the failure directory");
    let file = dir.join(format!("{name}-{:016x}", fnv(input)));
    std::fs::write(&file, input).expect("the failing input is written");
    panic!(
        "harness {name} failed on {origin} (see the panic above); the input is in {}: \
         copy it into crates/rendezvous-fuzz/regressions/{name}/",
        file.display()
    );
}

/// FNV-1a, to name an input's file by its content.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Random inputs for `RENDEZVOUS_FUZZ_SECS`: a few short ones, most up to
/// 16 KiB (long enough for a sequence of a few hundred actions).
fn random(name: &str) {
    let harness = harness(name);
    let secs = env_u64("RENDEZVOUS_FUZZ_SECS", DEFAULT_SECS);
    let seed = env_u64("RENDEZVOUS_FUZZ_SEED", DEFAULT_SEED) ^ fnv(name.as_bytes());
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut input = Vec::new();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let len = match rng.random_range(0..10) {
            0..=2 => rng.random_range(0..64),
            3..=5 => rng.random_range(64..1024),
            _ => rng.random_range(1024..16 * 1024),
        };
        input.resize(len, 0);
        rng.fill_bytes(&mut input);
        run_one(
            name,
            harness,
            &input,
            &format!("random input {runs} of seed {seed:#x}"),
        );
        runs += 1;
    }
    eprintln!("{name}: {runs} random inputs in {secs} s");
}

/// The committed inputs of `regressions/<name>/<dir>`, in name order.
fn inputs(name: &str, dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(name)
        .join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

fn regressions(name: &str, dir: &str) {
    let harness = harness(name);
    for file in inputs(name, dir) {
        let input = std::fs::read(&file).expect("a regression input reads");
        run_one(name, harness, &input, &file.display().to_string());
    }
}

macro_rules! harness_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn survives_random_inputs() {
                super::random(stringify!($name));
            }

            #[test]
            fn survives_its_regression_inputs() {
                super::regressions(stringify!($name), ".");
                super::regressions(stringify!($name), "known-bugs");
            }
        }
    )*};
}

harness_tests!(decoders, session, restored, registry, wire, parsers);

/// The inputs of `regressions/<harness>/known-bugs/`: each shows a server
/// bug not fixed yet (see `rendezvous_fuzz::Mode`), which the harness's
/// default run follows so that fuzzing goes on looking for others.
/// Replayed here against what the documentation says, they pass once the
/// bugs are fixed.
#[test]
fn known_bugs_are_fixed() {
    for (name, harness) in HARNESSES {
        let documented = DOCUMENTED
            .iter()
            .find(|(n, _)| n == name)
            .map_or(*harness, |(_, h)| *h);
        for file in inputs(name, "known-bugs") {
            let input = std::fs::read(&file).expect("a regression input reads");
            run_one(name, documented, &input, &file.display().to_string());
        }
    }
}

#[test]
fn every_harness_is_tested_here() {
    let tested = [
        "decoders", "session", "restored", "registry", "wire", "parsers",
    ];
    for (name, _) in HARNESSES {
        assert!(tested.contains(name), "harness {name} has no tests here");
    }
}
