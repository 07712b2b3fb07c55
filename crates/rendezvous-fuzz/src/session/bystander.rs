//! The bystander: a session the actions never touch, fed and read at
//! every step.

use rendezvous_proto::Role;
use rendezvous_server::auth::Digest;
use rendezvous_server::session::{NewGuest, Read, RelayConfig, Session};

use crate::pattern;

/// The bystander: a session of its own with one guest, fed and read at
/// every step, whose stream must stay exact whatever the other does.
pub(super) struct Bystander {
    pub(super) session: Session,
    pub(super) attachment: u64,
    pub(super) cursor: u64,
}

impl Bystander {
    pub(super) fn new() -> Self {
        let session = Session::new("bystander".into(), 80, 24, RelayConfig::default());
        let attached = session
            .attach_guest(
                "watcher".into(),
                Digest::of("watcher-token"),
                NewGuest {
                    role: Role::ReadWrite,
                    cols: 80,
                    rows: 24,
                    resume_offset: None,
                    resume_guest: None,
                    signed_resume: None,
                    max_guests: 1,
                },
            )
            .expect("the bystander's guest attaches");
        Self {
            session,
            attachment: attached.attachment,
            cursor: 0,
        }
    }

    pub(super) fn step(&mut self) {
        let end = self.session.end_offset();
        self.session.push_output(pattern::run(end, 17));
        loop {
            match self
                .session
                .read_attached("watcher", self.attachment, self.cursor)
            {
                Read::Output { offset, data } => {
                    assert_eq!(offset, self.cursor, "bystander: output at a wrong offset");
                    assert!(pattern::matches(offset, &data), "bystander: wrong bytes");
                    self.cursor += data.len() as u64;
                }
                Read::Nothing => break,
                other => panic!("bystander: unexpected read {other:?}"),
            }
        }
        assert_eq!(
            self.cursor,
            self.session.end_offset(),
            "bystander fell behind"
        );
        assert!(!self.session.has_ended());
    }
}
