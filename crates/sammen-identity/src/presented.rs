//! Which client certificate a failed handshake presented.
//!
//! rustls refuses a certificate inside the handshake and reports only the error; the connection, and with
//! it the certificate, is gone. The listener wants the refused certificate's fingerprint for its audit
//! leaf, so the verifier notes every end-entity certificate it is asked about in the slot that the polling
//! code installed around the handshake ([`observe_presented`]). A thread-local, set only for the
//! duration of one synchronous poll, ties the note to the connection being polled, whatever thread a
//! multi-threaded runtime polls it on; outside such a poll the verifier notes nothing.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// Filled by the verifier during the handshakes polled under [`observe_presented`].
#[derive(Debug, Clone, Default)]
pub struct PresentedSlot(Arc<Mutex<Option<String>>>);

impl PresentedSlot {
    /// A new, empty slot (one per connection).
    pub fn new() -> Self {
        Self::default()
    }

    /// The SHA-256 fingerprint ([`crate::fingerprint`]) of the last end-entity certificate presented.
    pub fn fingerprint(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, fingerprint: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<PresentedSlot>> = const { RefCell::new(None) };
}

/// Run `f` (one poll of a TLS accept) with `slot` as the place the verifier notes presented certificates.
pub fn observe_presented<R>(slot: &PresentedSlot, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<PresentedSlot>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = CURRENT.with(|c| c.borrow_mut().replace(slot.clone()));
    let _restore = Restore(prev);
    f()
}

/// Called by the verifier with each end-entity certificate it checks.
pub(crate) fn note(der: &[u8]) {
    CURRENT.with(|c| {
        if let Some(slot) = c.borrow().as_ref() {
            slot.set(crate::fingerprint(der));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_observing_poll_sees_the_note() {
        let (a, b) = (PresentedSlot::new(), PresentedSlot::new());
        note(b"outside");
        observe_presented(&a, || {
            note(b"first");
            observe_presented(&b, || note(b"nested"));
        });
        note(b"after");
        assert_eq!(a.fingerprint(), Some(crate::fingerprint(b"first")));
        assert_eq!(b.fingerprint(), Some(crate::fingerprint(b"nested")));
    }
}
