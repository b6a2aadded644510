//! Who may use a key besides its owner and root: grants and revocations. The list is
//! in the MAC'd body, so a grant added by editing the file makes it fail to unlock; the
//! check itself is [`KeyEntry::allows`](super::KeyEntry::allows).

use super::model::{Acl, Principal};
use super::Keystore;
use crate::keys::KeyError;

impl Keystore {
    /// Adds `who` to the users of key `name`; false if it was there already.
    pub fn grant(&mut self, name: &str, who: Principal) -> Result<bool, KeyError> {
        self.change_acl(name, |acl| match who {
            Principal::User(u) => acl.users.insert(u),
            Principal::Group(g) => acl.groups.insert(g),
        })
    }

    /// Removes `who` from the users of key `name`; false if it was not there.
    pub fn revoke(&mut self, name: &str, who: Principal) -> Result<bool, KeyError> {
        self.change_acl(name, |acl| match who {
            Principal::User(u) => acl.users.remove(&u),
            Principal::Group(g) => acl.groups.remove(&g),
        })
    }

    fn change_acl(&mut self, name: &str, change: impl FnOnce(&mut Acl) -> bool) -> Result<bool, KeyError> {
        self.update(|ks| {
            ks.key(name)?;
            Ok(change(&mut ks.body.keys.get_mut(name).expect("checked").acl))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::fresh;
    use super::*;

    #[test]
    fn acl_grant_revoke_and_allows() {
        let (d, mut ks) = fresh();
        ks.create_key("k1", 1000).unwrap();
        assert!(ks.grant("k1", Principal::User(2000)).unwrap());
        assert!(!ks.grant("k1", Principal::User(2000)).unwrap(), "already granted");
        assert!(ks.grant("k1", Principal::Group(50)).unwrap());
        assert!(matches!(
            ks.grant("nokey", Principal::User(1)),
            Err(KeyError::NoSuchKey(_))
        ));
        let ks2 = Keystore::unlock(d.path(), b"pw").unwrap();
        let k = ks2.key("k1").unwrap();
        let none = Vec::new;
        assert!(k.allows(0, 0, none), "root");
        assert!(k.allows(1000, 1000, none), "owner");
        assert!(k.allows(2000, 2000, none), "granted user");
        assert!(k.allows(3000, 50, none), "granted primary group");
        assert!(
            k.allows(3000, 3000, || vec![7, 50]),
            "granted supplementary group"
        );
        assert!(!k.allows(3000, 3000, || vec![7]), "nobody else");
        assert!(ks.revoke("k1", Principal::User(2000)).unwrap());
        assert!(!ks.revoke("k1", Principal::User(2000)).unwrap());
        assert!(!ks.key("k1").unwrap().allows(2000, 2000, none));
    }
}
