//! Keystore parser: arbitrary bytes as BACKING/.ezfs/keystore.json, read by the
//! public-part reader and by unlock. Either gives an error or a keystore, never a
//! panic. Unlock is attempted only with cheap Argon2id parameters (a keystore can ask
//! for any cost; the fuzzer should not spend its time in the KDF).
#![no_main]

use ezfs::keys::keystore::{read_body, KEYSTORE_FILE};
use ezfs::keys::Keystore;
use libfuzzer_sys::fuzz_target;

/// Whether the KDF parameters in `data` (if it is JSON at all) are cheap.
fn cheap_kdf(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return true; // not JSON: the parser refuses it before any KDF
    };
    let get = |k: &str| v["kdf"][k].as_u64();
    matches!((get("m_kib"), get("t"), get("p")), (Some(m), Some(t), Some(p)) if m <= 64 && t <= 2 && p <= 2)
        || v["kdf"].is_null()
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static DIR: tempfile::TempDir = {
            let d = tempfile::Builder::new().prefix("ezfs-fuzz").tempdir_in("/dev/shm").expect("tempdir");
            std::fs::create_dir(d.path().join(".ezfs")).unwrap();
            d
        };
    }
    DIR.with(|d| {
        std::fs::write(d.path().join(".ezfs").join(KEYSTORE_FILE), data).unwrap();
        let _ = read_body(d.path());
        if cheap_kdf(data) {
            let _ = Keystore::unlock(d.path(), b"fuzz passphrase");
        }
    });
});
