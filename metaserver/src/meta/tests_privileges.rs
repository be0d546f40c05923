//! Set-user-ID and set-group-ID as a write, a truncation or a change of owner leaves them
//! (part of the suite run on every store): what Linux's ext4 does, which the FUSE adapter
//! relies on since it takes over clearing them from the kernel (HANDLE_KILLPRIV_V2).

use meridian_proto::*;

fn perm_after(ns: &dyn Namespace, name: &str, perm: u16, who: &Caller, set: SetAttr) -> u16 {
    let root = Caller::root();
    let f = ns
        .mknod(&root, ROOT, name.as_bytes(), FileKind::Regular, 0o777, 0)
        .unwrap();
    let chmod = SetAttr {
        mode: Some(perm),
        ..Default::default()
    };
    ns.setattr(&root, f.ino, &chmod).unwrap();
    ns.setattr(who, f.ino, &set).unwrap().perm
}

pub(super) fn set_id_bits_go_as_on_a_local_disk(ns: &dyn Namespace) {
    let nobody = Caller::new(65534, 65534, vec![]);
    let member = Caller::new(1000, 0, vec![]);
    let kill = || SetAttr {
        kill_suidgid: true,
        via_handle: true,
        ..Default::default()
    };
    let p = |name, perm, who: &Caller, set| perm_after(ns, name, perm, who, set);
    // A writer without CAP_FSETID: set-group-ID goes where the group may execute, or where
    // the writer is outside the file's group.
    assert_eq!(p("w1", 0o6777, &nobody, kill()), 0o777);
    assert_eq!(p("w2", 0o6767, &nobody, kill()), 0o767);
    assert_eq!(p("w3", 0o6767, &member, kill()), 0o2767, "in the group");
    assert_eq!(p("w4", 0o6777, &member, kill()), 0o777, "group may execute");
    assert_eq!(p("w5", 0o0777, &nobody, kill()), 0o777, "nothing to clear");
    // Without the flag (root, or a plain truncation by root) nothing goes.
    let trunc = SetAttr {
        size: Some(10),
        ..Default::default()
    };
    assert_eq!(p("t1", 0o6777, &Caller::root(), trunc), 0o6777);
    // A change of owner or group clears them whoever asks, but only on non-directories.
    let chown = || SetAttr {
        uid: Some(65534),
        ..Default::default()
    };
    assert_eq!(p("c1", 0o6777, &Caller::root(), chown()), 0o777);
    assert_eq!(p("c2", 0o6767, &Caller::root(), chown()), 0o2767);
    let root = Caller::root();
    let d = ns.mkdir(&root, ROOT, b"d", 0o777).unwrap();
    let setgid_dir = SetAttr {
        mode: Some(0o2777),
        ..Default::default()
    };
    ns.setattr(&root, d.ino, &setgid_dir).unwrap();
    assert_eq!(ns.setattr(&root, d.ino, &chown()).unwrap().perm, 0o2777);
}
