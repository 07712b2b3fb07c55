//! How large one gRPC message may be, on every RPC, in both directions,
//! for every party (server, host, guest, bench).
//!
//! gRPC frames each message with a 5-byte prefix that carries its encoded
//! length, and each side refuses a length over its limit. tonic's own
//! defaults (4 MiB to decode, unbounded to encode) would refuse the
//! proto's largest Output, which is 4 MiB of data plus its field tag and
//! length; so every client and service sets [`MAX_MESSAGE_BYTES`] both
//! ways, and the server refuses a larger message with `RESOURCE_EXHAUSTED`
//! naming the limit and its value.

/// Largest data one message carries, in bytes (4 MiB): a host's `Output`,
/// the `Input` the server sends a host (one guest's input call joined with
/// the input that waited for it), an output event to a guest.
pub const MAX_DATA_BYTES: usize = 4 * 1024 * 1024;

/// Room for everything in a message besides its data, in bytes (64 KiB):
/// field tags and lengths, offsets, IDs, secrets and tokens. A 4 MiB
/// `Output` needs 5 of them.
pub const ENVELOPE_BYTES: usize = 64 * 1024;

/// Largest encoded message, in bytes (4 MiB + 64 KiB = 4,259,840): the
/// decoding and the encoding limit of every client and service.
pub const MAX_MESSAGE_BYTES: usize = MAX_DATA_BYTES + ENVELOPE_BYTES;

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::{HostDataRequest, host_data_request};

    #[test]
    fn the_largest_output_fits_one_message() {
        let output = HostDataRequest {
            message: Some(host_data_request::Message::Output(
                vec![0u8; MAX_DATA_BYTES].into(),
            )),
        };
        let len = output.encoded_len();
        assert!(len > MAX_DATA_BYTES, "{len}");
        assert!(len <= MAX_MESSAGE_BYTES, "{len}");
    }
}
