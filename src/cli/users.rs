//! User and group names <-> ids, for key access lists.

use std::ffi::{CStr, CString};

/// A uid from a user name or a number.
pub fn uid_of(user: &str) -> Option<u32> {
    if let Ok(n) = user.parse() {
        return Some(n);
    }
    let name = CString::new(user).ok()?;
    // SAFETY: valid C string; the returned record is only read before the next call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    // SAFETY: non-null pointers from getpwnam point to a valid passwd record.
    (!pw.is_null()).then(|| unsafe { (*pw).pw_uid })
}

/// A gid from a group name or a number.
pub fn gid_of(group: &str) -> Option<u32> {
    if let Ok(n) = group.parse() {
        return Some(n);
    }
    let name = CString::new(group).ok()?;
    // SAFETY: as in uid_of.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null pointers from getgrnam point to a valid group record.
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

/// The login name of `uid`, if it has one.
pub fn login_of(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns null or a valid record.
    let pw = unsafe { libc::getpwuid(uid) };
    (!pw.is_null()).then(|| {
        // SAFETY: pw_name of a valid record is a C string.
        unsafe { CStr::from_ptr((*pw).pw_name) }
            .to_string_lossy()
            .into_owned()
    })
}

/// The name of group `gid`, if it has one.
pub fn group_of(gid: u32) -> Option<String> {
    // SAFETY: getgrgid returns null or a valid record.
    let gr = unsafe { libc::getgrgid(gid) };
    (!gr.is_null()).then(|| {
        // SAFETY: gr_name of a valid record is a C string.
        unsafe { CStr::from_ptr((*gr).gr_name) }
            .to_string_lossy()
            .into_owned()
    })
}

/// "name (uid)" or just the number when the user is unknown.
pub fn user_name(uid: u32) -> String {
    login_of(uid).map_or_else(|| uid.to_string(), |n| format!("{n} ({uid})"))
}

/// "name (gid)" or just the number when the group is unknown.
pub fn group_name(gid: u32) -> String {
    group_of(gid).map_or_else(|| gid.to_string(), |n| format!("{n} ({gid})"))
}
