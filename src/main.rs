//! The `ezfs` command; everything is in the library's `cli` module. Called as
//! `mount.fuse.ezfs` (a link installed for `mount -t fuse.ezfs` and fstab), it is the
//! mount helper.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = if name.starts_with("mount.fuse.ezfs") || name == "mount.ezfs" {
        ezfs::cli::mount_helper(args)
    } else {
        ezfs::cli::run()
    };
    std::process::exit(code);
}
