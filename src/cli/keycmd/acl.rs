//! `ezfs key grant|revoke|acl`: who besides its owner and root may use a key's zones.

use super::super::backing::{authentic_body, notify_mount, unlock, BackingArg};
use super::super::{users, CliResult, Failure, PassArgs};
use crate::keys::keystore::Principal;

/// A user or a group, by name or number.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct WhoArg {
    /// A user name or uid.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// A group name or gid.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

impl WhoArg {
    fn resolve(&self) -> Result<(Principal, String), Failure> {
        match (&self.user, &self.group) {
            (Some(u), _) => users::uid_of(u)
                .map(|id| (Principal::User(id), format!("user {}", users::user_name(id))))
                .ok_or_else(|| Failure::op(format!("no user named '{u}'"))),
            (_, Some(g)) => users::gid_of(g)
                .map(|id| (Principal::Group(id), format!("group {}", users::group_name(id))))
                .ok_or_else(|| Failure::op(format!("no group named '{g}'"))),
            _ => Err(Failure::usage("give --user or --group")),
        }
    }
}

/// `key grant` (`grant`) or `key revoke`.
pub(super) fn change(name: &str, who: &WhoArg, at: &BackingArg, pass: &PassArgs, grant: bool) -> CliResult {
    let backing = at.resolve()?;
    let (p, shown) = who.resolve()?;
    let mut ks = unlock(&backing, pass)?;
    let op = if grant { "GRANT" } else { "REVOKE" };
    let changed = super::lifecycle::Auditor::of(&ks).run(
        op,
        name,
        |_| None,
        || {
            Ok(if grant {
                ks.grant(name, p)?
            } else {
                ks.revoke(name, p)?
            })
        },
    )?;
    notify_mount(&backing)?;
    match (grant, changed) {
        (true, true) => println!("granted {shown} the use of key {name}"),
        (true, false) => println!("{shown} already had the use of key {name}"),
        (false, true) => println!("revoked the use of key {name} from {shown}"),
        (false, false) => println!("{shown} had no grant on key {name}"),
    }
    Ok(())
}

/// `key acl`: the owner, root, and every user and group granted, from the
/// authenticated keystore.
pub(super) fn show(name: &str, at: &BackingArg, pass: &PassArgs, json: bool) -> CliResult {
    let body = authentic_body(&at.resolve()?, pass)?;
    let k = body
        .keys
        .get(name)
        .ok_or_else(|| crate::keys::KeyError::NoSuchKey(name.to_owned()))?;
    if json {
        let who = |id: u32, n: Option<String>| serde_json::json!({"id": id, "name": n});
        let v = serde_json::json!({
            "key": name,
            "owner": who(k.owner, users::login_of(k.owner)),
            "users": k.acl.users.iter().map(|u| who(*u, users::login_of(*u))).collect::<Vec<_>>(),
            "groups": k.acl.groups.iter().map(|g| who(*g, users::group_of(*g))).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
        return Ok(());
    }
    println!("key {name}:");
    println!("  owner:  {}", users::user_name(k.owner));
    println!("  root:   always");
    for u in &k.acl.users {
        println!("  user:   {}", users::user_name(*u));
    }
    for g in &k.acl.groups {
        println!("  group:  {}", users::group_name(*g));
    }
    Ok(())
}
