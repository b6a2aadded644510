//! The recovery key: a second way to the master key when the passphrase is lost.
//!
//! ```text
//! recovery key (random, 256 bit) --AES-GCM--> S (random, 256 bit)
//! S                              --AES-GCM--> master key
//! master key                     --AES-GCM--> S          (so a rotation can re-wrap)
//! ```
//! The recovery key is shown once (or written to a file) and never stored. Going
//! through `S` lets `passwd --rotate-master` wrap the new master key for the same
//! recovery key: the master key changes, the recovery key stays valid. Each wrap binds
//! its role in the associated data.

use crate::crypto::{Cipher, Key, WRAPPED_KEY_LEN};
use crate::text::{hex, unhex, unhex_into};
use serde::{Deserialize, Serialize};

const SECRET_BY_RECOVERY: &[u8] = b"ezfs-recovery-secret\0";
const MASTER_BY_SECRET: &[u8] = b"ezfs-recovery-master\0";
const SECRET_BY_MASTER: &[u8] = b"ezfs-secret-by-master\0";

/// The recovery slot as the keystore file holds it (hex of 60-byte wraps).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Slot {
    /// `S` wrapped by the recovery key.
    pub secret_by_recovery: String,
    /// The master key wrapped by `S`.
    pub master_by_secret: String,
    /// `S` wrapped by the master key, so a new master key can be given the same slot.
    pub secret_by_master: String,
}

/// A new slot for `master`, and the recovery key that opens it.
pub fn new_slot(master: &Key) -> (Slot, Key) {
    let recovery = Key::random();
    let secret = Key::random();
    let slot = Slot {
        secret_by_recovery: hex(&recovery.cipher().wrap_key(SECRET_BY_RECOVERY, &secret)),
        master_by_secret: hex(&secret.cipher().wrap_key(MASTER_BY_SECRET, master)),
        secret_by_master: hex(&master.cipher().wrap_key(SECRET_BY_MASTER, &secret)),
    };
    (slot, recovery)
}

/// The master key, from the slot and the recovery key; `None` if the key is wrong or
/// the slot damaged.
pub fn master_from(slot: &Slot, recovery: &Key) -> Option<Key> {
    let secret = recovery
        .cipher()
        .unwrap_key(
            SECRET_BY_RECOVERY,
            &unhex::<WRAPPED_KEY_LEN>(&slot.secret_by_recovery)?,
        )
        .ok()?;
    secret
        .cipher()
        .unwrap_key(
            MASTER_BY_SECRET,
            &unhex::<WRAPPED_KEY_LEN>(&slot.master_by_secret)?,
        )
        .ok()
}

/// The slot for a new master key `new`, given the old master's cipher: the same
/// recovery key opens it.
pub fn rewrap(slot: &Slot, old: &Cipher, new: &Key) -> Option<Slot> {
    let secret = old
        .unwrap_key(
            SECRET_BY_MASTER,
            &unhex::<WRAPPED_KEY_LEN>(&slot.secret_by_master)?,
        )
        .ok()?;
    Some(Slot {
        secret_by_recovery: slot.secret_by_recovery.clone(),
        master_by_secret: hex(&secret.cipher().wrap_key(MASTER_BY_SECRET, new)),
        secret_by_master: hex(&new.cipher().wrap_key(SECRET_BY_MASTER, &secret)),
    })
}

/// The recovery key as people write it down: 64 hex digits in groups of eight.
pub fn format_key(k: &Key) -> zeroize::Zeroizing<String> {
    let h = zeroize::Zeroizing::new(hex(k.expose()));
    let groups: Vec<&str> = (0..8).map(|i| &h[i * 8..i * 8 + 8]).collect();
    zeroize::Zeroizing::new(groups.join("-"))
}

/// Parses a recovery key written by [`format_key`] (dashes and white space ignored).
pub fn parse_key(text: &str) -> Option<Key> {
    // sized once, so that no partial copy of the digits is left in freed memory
    let mut digits = zeroize::Zeroizing::new(String::with_capacity(text.len()));
    digits.extend(text.chars().filter(|c| !c.is_whitespace() && *c != '-'));
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    if !unhex_into(&digits, &mut bytes[..]) {
        return None;
    }
    Key::from_slice(&bytes[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_the_master_key_and_survives_a_rotation() {
        let master = Key::random();
        let (slot, rk) = new_slot(&master);
        assert_eq!(master_from(&slot, &rk).unwrap(), master);
        assert!(master_from(&slot, &Key::random()).is_none());
        let text = format_key(&rk);
        assert_eq!(text.len(), 64 + 7);
        assert_eq!(parse_key(&text).unwrap(), rk);
        assert_eq!(parse_key(&format!(" {}\n", text.replace('-', ""))).unwrap(), rk);
        assert!(parse_key("12-34").is_none());
        let new = Key::random();
        let slot2 = rewrap(&slot, &master.cipher(), &new).unwrap();
        assert_eq!(master_from(&slot2, &rk).unwrap(), new);
        assert!(rewrap(&slot, &Key::random().cipher(), &new).is_none());
    }
}
