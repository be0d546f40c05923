//! Objectives through a real mount: the catalogue, attachments, keywords and labels live in
//! the namespace (surviving a remount), `meridian objective explain` gives the placement a
//! TD expects on a Shot Publish tree, and bad input is refused with line, column and caret.

mod common;
use common::*;
use std::path::Path;

fn meridian_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(meridian())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (success, out, err) = meridian_in(dir, args);
    assert!(success, "meridian {args:?} failed: {err}");
    out
}

/// The first SLO line of `meridian objective explain` for each path.
fn placement(dir: &Path, rel: &str) -> Vec<String> {
    ok(dir, &["objective", "explain", rel])
        .lines()
        .filter(|l| l.contains(" ← "))
        .map(|l| l.trim().split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn shot_publish_tree_gets_the_placement_a_td_means() {
    let mut m = Mount::new(Backend::LocalDir);
    let root = m.dir.clone();
    sh(&format!(
        "cd '{}' && mkdir -p project/PRJ/flame/SH010/batch project/PRJ/flame/SH010/v002 \
         project/PRJ/renders/SH010 && echo '<clip/>' > project/PRJ/flame/SH010.clip && \
         echo '<clip/>' > project/PRJ/flame/SH010/v002/SH010.clip && \
         echo setup > project/PRJ/flame/SH010/batch/SH010_comp_v001.batch && \
         head -c 100000 /dev/zero > project/PRJ/renders/SH010/SH010_comp_v001.1001.exr && \
         head -c 100000 /dev/zero > project/PRJ/renders/SH010/SH010_comp_v002.1001.exr && \
         touch -d '45 days ago' project/PRJ/renders/SH010/SH010_comp_v001.1001.exr",
        root.display()
    ));
    ok(&root, &["objective", "places", "east", "west"]);
    for (name, expr) in [
        (
            "clips-east",
            r#"IF FNMATCH("./hs-mount/project/*/flame/*.clip",PATH) THEN {SLO('place-on-east')}"#,
        ),
        (
            "renders-west",
            r#"IF FNMATCH("project/*/renders/*", PATH) THEN {SLO('place-on-west')}"#,
        ),
        (
            "old-versions-shared",
            "IF FNMATCH('*.exr', NAME) && LAST_MODIFIED_AGE > 30*DAYS THEN {SLO('place-on-shared-object-volumes'), SLO('exclude-from-west')}",
        ),
        (
            "setups-local",
            "IF FNMATCH('*/batch/*.batch', PATH) THEN SLO('place-on-local-volumes') ELSE SLO('keep-online')",
        ),
    ] {
        ok(&root, &["objective", "add", name, "-e", expr]);
    }
    ok(&root, &["objective", "apply", "clips-east", "."]);
    ok(
        &root,
        &[
            "objective",
            "apply",
            "old-versions-shared",
            "project/PRJ/renders",
        ],
    );
    ok(&root, &["objective", "apply", "renders-west", "project"]);
    ok(
        &root,
        &[
            "objective",
            "apply",
            "setups-local",
            "project/PRJ/flame/SH010/batch/SH010_comp_v001.batch",
        ],
    );

    let check = |m: &Mount| {
        let d = &m.dir;
        assert_eq!(
            placement(d, "project/PRJ/flame/SH010.clip"),
            ["place-on-east"]
        );
        assert_eq!(
            placement(d, "project/PRJ/flame/SH010/v002/SH010.clip"),
            ["place-on-east"]
        );
        assert_eq!(
            placement(d, "project/PRJ/flame/SH010/batch/SH010_comp_v001.batch"),
            ["place-on-local-volumes"]
        );
        assert_eq!(
            placement(d, "project/PRJ/renders/SH010/SH010_comp_v002.1001.exr"),
            ["place-on-west"]
        );
        // The old version: its directory's objective (nearer) excludes West, overriding the
        // project-wide render rule.
        let old = "project/PRJ/renders/SH010/SH010_comp_v001.1001.exr";
        assert_eq!(
            placement(d, old),
            ["place-on-shared-object-volumes", "exclude-from-west"]
        );
        let why = ok(d, &["objective", "explain", old]);
        assert!(
            why.contains("overridden: place-on-west from renders-west"),
            "{why}"
        );
    };
    check(&m);
    m.remount();
    check(&m);

    // Keywords and labels, through the CLI and as xattrs.
    let clip = root.join("project/PRJ/flame/SH010.clip");
    ok(
        &root,
        &[
            "keyword",
            "add",
            "final",
            "hero",
            "-p",
            clip.to_str().unwrap(),
        ],
    );
    ok(
        &root,
        &["label", "add", "approved", "-p", clip.to_str().unwrap()],
    );
    let raw = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cat /dev/null; python3 -c \"import os;print(os.getxattr('{}','user.meridian.keywords').decode())\"", clip.display()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&raw.stdout).trim(), "final\nhero");
    ok(
        &root,
        &[
            "objective",
            "add",
            "hero",
            "-e",
            "IF HAS_KEYWORD('hero') && HAS_LABEL('approved') THEN SLO('keep-online')",
        ],
    );
    ok(
        &root,
        &["objective", "apply", "hero", "project/PRJ/flame/SH010.clip"],
    );
    assert_eq!(
        placement(&root, "project/PRJ/flame/SH010.clip"),
        ["keep-online", "place-on-east"]
    );
    ok(
        &root,
        &["keyword", "remove", "hero", "-p", clip.to_str().unwrap()],
    );
    assert_eq!(
        placement(&root, "project/PRJ/flame/SH010.clip"),
        ["place-on-east"]
    );
    ok(&root, &["objective", "detach", "clips-east", "."]);
    assert!(placement(&root, "project/PRJ/flame/SH010.clip").is_empty());
}

#[test]
fn bad_objectives_are_refused_with_position_and_caret() {
    let m = Mount::new(Backend::LocalDir);
    let (success, _, err) = meridian_in(
        &m.dir,
        &[
            "objective",
            "add",
            "x",
            "-e",
            "IF SIZE > THEN SLO('keep-online')",
        ],
    );
    assert!(!success);
    assert!(
        err.contains("line 1, column 11: expected a condition or a number ("),
        "{err}"
    );
    assert!(err.contains("found `THEN`"), "{err}");
    assert!(
        err.contains("\n  IF SIZE > THEN SLO('keep-online')\n            ^"),
        "{err}"
    );
    let (success, _, err) = meridian_in(
        &m.dir,
        &["objective", "add", "x", "-e", "SLO('place-on-mars')"],
    );
    assert!(!success);
    assert!(
        err.contains("unknown SLO 'place-on-mars'") && err.contains("keep-online"),
        "{err}"
    );
    let (success, _, err) = meridian_in(&m.dir, &["objective", "apply", "nope", "."]);
    assert!(!success && err.contains("no objective named nope"), "{err}");
    let out = ok(
        &m.dir,
        &[
            "objective",
            "check",
            "IF FNMATCH('a/b', NAME) THEN SLO('keep-online') ELSE SLO('keep-online')",
        ],
    );
    assert!(
        out.contains("warning: FNMATCH(\"a/b\", NAME) can never match"),
        "{out}"
    );
    assert!(
        ok(&m.dir, &["objective", "list"]).is_empty(),
        "nothing was added"
    );
}
