//! Whole trees through the real mount: `cp -a`, `tar`, `git clone` and `rsync -a` into a
//! Garage-backed mount and back out give identical trees, and so does a remount.

mod common;
use common::*;
use std::path::Path;

/// A source tree with what studios have: nested shot folders, small and multi-chunk files,
/// an empty file and directory, symlinks, a hard link, odd names, modes, and a git repo.
fn make_tree(root: &Path) {
    sh(&format!(
        r#"
        cd {root}
        mkdir -p src/project/PRJ/flame/SH010/renders src/empty_dir "src/with space/ünïcode"
        head -c 1000 /dev/urandom > src/project/PRJ/flame/SH010.clip
        head -c 70000 /dev/urandom > src/project/PRJ/flame/SH010/batch.setup
        head -c 9000000 /dev/urandom > src/project/PRJ/flame/SH010/renders/shot.1001.exr
        head -c 4194304 /dev/urandom > src/project/PRJ/flame/SH010/renders/shot.1002.exr
        : > src/empty_file
        echo hello > "src/with space/ünïcode/name with spaces.txt"
        ln -s project/PRJ/flame/SH010.clip src/clip_link
        ln -s /nonexistent/target src/dangling
        ln src/empty_file src/hardlink
        chmod 750 src/project; chmod 4755 src/project/PRJ/flame/SH010.clip; chmod 600 src/empty_file
        touch -d '2020-01-02 03:04:05.123456789' src/project/PRJ/flame/SH010/batch.setup
        mkdir repo && cd repo && git init -q && git config user.email t@e && git config user.name t
        cp -r ../src/project . && git add -A && git commit -qm one && echo two > two && git add two && git commit -qm two
        "#,
        root = root.display()
    ));
}

/// Asserts two trees have the same names, types, modes, sizes, link targets and bytes.
fn assert_same_tree(a: &Path, b: &Path) {
    // Directory sizes are the filesystem's own business; everything else must match.
    let listing = |p: &Path| {
        sh(&format!(
            "cd '{}' && find . \\( -type d -printf '%P d %m\\n' \\) -o -printf '%P %y %m %s %l\\n' | sort",
            p.display()
        ))
    };
    assert_eq!(
        listing(a),
        listing(b),
        "tree listings differ: {} vs {}",
        a.display(),
        b.display()
    );
    sh(&format!(
        "diff -r --no-dereference '{}' '{}'",
        a.display(),
        b.display()
    ));
}

#[test]
fn copy_tools_round_trip_through_the_mount() {
    let tmp = tempfile::tempdir().unwrap();
    make_tree(tmp.path());
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut m = Mount::new(Backend::Garage);
    let mnt = m.dir.clone();
    let s = |cmd: String| sh(&cmd);

    s(format!(
        "cp -a '{}' '{}/cp' && cp -a '{}/cp' '{}/cp'",
        src.display(),
        mnt.display(),
        mnt.display(),
        out.display()
    ));
    assert_same_tree(&src, &out.join("cp"));

    s(format!(
        "mkdir '{m}/tar' '{o}/tar' && tar -C '{src}' -cf - . | tar -C '{m}/tar' -xpf - && tar -C '{m}/tar' -cf - . | tar -C '{o}/tar' -xpf -",
        m = mnt.display(),
        o = out.display(),
        src = src.display()
    ));
    assert_same_tree(&src, &out.join("tar"));

    s(format!(
        "rsync -aH '{}/' '{}/rsync/' && rsync -aH '{}/rsync/' '{}/rsync/'",
        src.display(),
        mnt.display(),
        mnt.display(),
        out.display()
    ));
    assert_same_tree(&src, &out.join("rsync"));
    let times = |p: &Path| {
        sh(&format!(
            "cd '{}' && find . -printf '%P %T@\\n' | sort",
            p.display()
        ))
    };
    assert_eq!(
        times(&src),
        times(&out.join("rsync")),
        "rsync -a must preserve modification times to the nanosecond"
    );

    let repo = tmp.path().join("repo");
    s(format!(
        "git clone -q '{r}' '{m}/clone' && git -C '{m}/clone' fsck --full && git clone -q '{m}/clone' '{o}/clone'",
        r = repo.display(),
        m = mnt.display(),
        o = out.display()
    ));
    assert_eq!(
        sh(&format!("git -C '{}' log --format=%H%s", repo.display())),
        sh(&format!(
            "git -C '{}' log --format=%H%s",
            out.join("clone").display()
        ))
    );
    sh(&format!(
        "diff -r --exclude=.git '{}' '{}/clone'",
        repo.display(),
        out.display()
    ));

    // Unmount, mount again: everything reads back bit-exact.
    m.remount();
    assert_same_tree(&src, &mnt.join("cp"));
    assert_same_tree(&src, &mnt.join("tar"));
    assert_same_tree(&src, &mnt.join("rsync"));
    sh(&format!("git -C '{}/clone' fsck --full", mnt.display()));
}
