//! `mount.meridian`: the helper mount(8) runs for `/etc/fstab` lines of type `meridian`.
//! It is the `meridian` binary itself, called by that name:
//! `ln -s "$(command -v meridian)" /sbin/mount.meridian`.
//!
//! `mount.meridian SPEC MOUNTPOINT [-o OPTIONS]` becomes `meridian mount MOUNTPOINT …`:
//! `config=FILE` → `--config FILE`, `data_dir=DIR` → `--data-dir DIR`, `allow_other` →
//! `--allow-other`, `ro` → `--read-only`, `attr_ttl_ms=N` → `--attr-ttl-ms N`. Options that
//! belong to mount(8) itself (rw, defaults, auto, noauto, user, nouser, nofail, _netdev,
//! relatime, noatime, exec, suid, dev) are accepted and ignored; anything else is refused by
//! name. SPEC is a label for humans (e.g. the site or bucket) and is not interpreted.
//! Example fstab line:
//!
//! `studio  /mnt/meridian  meridian  config=/etc/meridian/site.toml,allow_other,_netdev  0 0`

use std::process::Command;

const IGNORED: &[&str] = &[
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "nofail", "_netdev", "relatime",
    "noatime", "atime", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "async", "sync",
];

/// The `meridian mount` arguments for these mount(8) options.
fn translate(mountpoint: &str, options: &str) -> Result<Vec<String>, String> {
    let mut args = vec!["mount".to_string(), mountpoint.to_string()];
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("config", Some(v)) => args.extend(["--config".into(), v.into()]),
            ("data_dir", Some(v)) => args.extend(["--data-dir".into(), v.into()]),
            ("attr_ttl_ms", Some(v)) => args.extend(["--attr-ttl-ms".into(), v.into()]),
            ("allow_other", None) => args.push("--allow-other".into()),
            ("ro", None) => args.push("--read-only".into()),
            (k, None) if IGNORED.contains(&k) => {}
            _ => {
                return Err(format!(
                    "unknown option '{opt}' in the fstab entry for {mountpoint}: use config=FILE, data_dir=DIR, \
                     attr_ttl_ms=N, allow_other or ro (see docs/operations.md)"
                ));
            }
        }
    }
    Ok(args)
}

/// Runs as mount(8)'s helper; never returns.
pub fn main() -> ! {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut options = String::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options = it.next().cloned().unwrap_or_default(),
            "-s" | "-f" | "-n" | "-v" => {} // sloppy, fake, no-mtab, verbose: nothing to do
            other => positional.push(other.to_string()),
        }
    }
    let [_spec, mountpoint] = positional.as_slice() else {
        eprintln!("mount.meridian: usage: mount.meridian SPEC MOUNTPOINT [-o OPTIONS]");
        std::process::exit(1);
    };
    let args = translate(mountpoint, &options).unwrap_or_else(|e| {
        eprintln!("mount.meridian: {e}");
        std::process::exit(1);
    });
    // The helper is a link to this very binary: run it again under its own name.
    let meridian = std::env::current_exe().unwrap_or_else(|_| "meridian".into());
    let status = Command::new(&meridian)
        .args(&args)
        .status()
        .unwrap_or_else(|e| {
            eprintln!("mount.meridian: cannot run {}: {e}", meridian.display());
            std::process::exit(1);
        });
    std::process::exit(status.code().unwrap_or(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_options_become_flags() {
        let a = translate("/mnt/m", "rw,config=/etc/m.toml,allow_other,_netdev,ro").unwrap();
        assert_eq!(
            a,
            [
                "mount",
                "/mnt/m",
                "--config",
                "/etc/m.toml",
                "--allow-other",
                "--read-only"
            ]
        );
    }

    #[test]
    fn unknown_options_are_refused_by_name() {
        let e = translate("/mnt/m", "config=/x,colour=blue").unwrap_err();
        assert!(e.contains("'colour=blue'") && e.contains("/mnt/m"), "{e}");
    }
}
