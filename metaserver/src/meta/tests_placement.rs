//! Placement through the namespace (part of the suite run on every store): objectives and
//! tags stored as xattrs, validated when written, and each file's wanted placement kept up
//! to date by create, rename, commit and tag changes.

use meridian_proto::*;

fn set(ns: &dyn Namespace, ino: InodeId, name: &str, value: &str) -> MetaResult<()> {
    ns.setxattr(
        &Caller::root(),
        ino,
        name.as_bytes(),
        value.as_bytes(),
        XattrMode::Any,
    )
}

fn placement(ns: &dyn Namespace, ino: InodeId) -> String {
    String::from_utf8(
        ns.getxattr(&Caller::root(), ino, b"user.meridian.placement")
            .unwrap(),
    )
    .unwrap()
}

fn mk(ns: &dyn Namespace, parent: InodeId, name: &str, dir: bool) -> InodeId {
    let who = Caller::root();
    let a = if dir {
        ns.mkdir(&who, parent, name.as_bytes(), 0o755)
    } else {
        ns.mknod(&who, parent, name.as_bytes(), FileKind::Regular, 0o644, 0)
    };
    a.unwrap().ino
}

pub fn objectives_and_placement(ns: &dyn Namespace) {
    set(ns, ROOT, "user.meridian.places", "east\nwest").unwrap();
    // Refused when written: bad syntax, unknown SLO, unknown attachment, not on the root,
    // the computed placement itself.
    let bad = set(
        ns,
        ROOT,
        "user.meridian.objective.x",
        "IF SIZE > THEN SLO('keep-online')",
    );
    assert!(matches!(bad, Err(MetaError::Invalid(m)) if m.contains("line 1, column 11")));
    let bad = set(
        ns,
        ROOT,
        "user.meridian.objective.x",
        "SLO('place-on-mars')",
    );
    assert!(matches!(bad, Err(MetaError::Invalid(m)) if m.contains("place-on-mars")));
    assert!(matches!(
        set(ns, ROOT, "user.meridian.objectives", "nope"),
        Err(MetaError::Invalid(_))
    ));
    let project = mk(ns, ROOT, "project", true);
    assert!(matches!(
        set(
            ns,
            project,
            "user.meridian.objective.x",
            "SLO('keep-online')"
        ),
        Err(MetaError::Invalid(_))
    ));
    set(
        ns,
        ROOT,
        "user.meridian.objective.clips",
        r#"IF FNMATCH("project/*/flame/*.clip", PATH) THEN SLO('place-on-east')"#,
    )
    .unwrap();
    set(
        ns,
        ROOT,
        "user.meridian.objective.hero",
        "IF HAS_KEYWORD('hero') THEN SLO('keep-online')",
    )
    .unwrap();
    set(
        ns,
        ROOT,
        "user.meridian.objective.big",
        "IF SIZE > 1MB THEN SLO('place-on-shared-object-volumes')",
    )
    .unwrap();
    set(ns, ROOT, "user.meridian.objectives", "clips\nbig").unwrap();

    // Create: evaluated at once with its path.
    let prj = mk(ns, project, "PRJ", true);
    let flame = mk(ns, prj, "flame", true);
    let clip = mk(ns, flame, "SH010.clip", false);
    assert_eq!(placement(ns, clip), "place-on-east");
    let notes = mk(ns, flame, "notes.txt", false);
    assert_eq!(placement(ns, notes), "");
    assert!(
        ns.listxattr(&Caller::root(), clip)
            .unwrap()
            .iter()
            .all(|n| !n.starts_with(b"system."))
    );
    assert!(matches!(
        set(ns, clip, "user.meridian.placement", "keep-online"),
        Err(MetaError::NotPermitted)
    ));

    // Keywords and a file's own attachment: re-evaluated.
    set(ns, clip, "user.meridian.keywords", "hero\nfinal").unwrap();
    set(ns, clip, "user.meridian.objectives", "hero").unwrap();
    assert_eq!(placement(ns, clip), "keep-online\nplace-on-east");

    // Rename: evaluated at the new name.
    ns.rename(
        &Caller::root(),
        flame,
        b"notes.txt",
        flame,
        b"SH020.clip",
        RenameMode::Replace,
    )
    .unwrap();
    assert_eq!(placement(ns, notes), "place-on-east");
    // A directory rename: the paths below change, seen when the record is read.
    ns.rename(
        &Caller::root(),
        prj,
        b"flame",
        prj,
        b"nuke",
        RenameMode::Replace,
    )
    .unwrap();
    assert_eq!(placement(ns, notes), "");

    // Commit of new data: SIZE changes the placement.
    let commit = Commit {
        chunks: Vec::new(),
        inline: None,
        size: 5 << 20,
        mtime: Timestamp::now(),
    };
    ns.commit(notes, &commit).unwrap();
    assert_eq!(placement(ns, notes), "place-on-shared-object-volumes");

    // Removing an objective from the catalogue: stale records are re-evaluated when read.
    ns.removexattr(&Caller::root(), ROOT, b"user.meridian.objective.big")
        .unwrap();
    assert_eq!(placement(ns, notes), "");
}
