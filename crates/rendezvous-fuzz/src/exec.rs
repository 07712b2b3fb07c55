//! How a harness runs one input: on a fresh single-threaded tokio runtime
//! with its clock paused, so that timers fire as soon as every task waits
//! (deterministic, and no input waits for real seconds), and with a panic
//! in any task of that runtime counted as a failure of the input.
//!
//! tokio catches a panic in a spawned task (the server spawns the readers
//! of its streams) and only ends that task; a fuzzer would never see it.
//! A panic hook counts panics per thread, and a current-thread runtime runs
//! every task on the thread that runs the input, so the count before and
//! after the input tells.

use std::cell::Cell;
use std::future::Future;
use std::sync::Once;
use std::time::Duration;

thread_local! {
    /// Panics on this thread since the hook was installed.
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

/// Installs the counting hook once, in front of whatever hook was there
/// (the default, or libFuzzer's, which aborts).
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

/// Runs `input` to completion on a new current-thread runtime with a
/// paused clock, then drops the runtime (and every task still on it).
///
/// # Panics
/// When `input` panics, or any task spawned on the runtime panicked.
pub fn run<F: Future>(input: F) -> F::Output {
    install_hook();
    let before = PANICS.with(Cell::get);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    let output = runtime.block_on(input);
    drop(runtime);
    let after = PANICS.with(Cell::get);
    assert_eq!(
        after, before,
        "a task panicked while the input ran (see the panic message above)"
    );
    output
}

/// Lets every task that can make progress run, up to waiting: a sleep on
/// the paused clock returns only once the runtime is otherwise idle.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}
