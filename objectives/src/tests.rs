//! Grammar tables, error messages, precedence, and property tests against reference models.

use super::*;
use crate::ast::{Cond, Num, Stmt, Subject};
use proptest::prelude::*;

fn cat() -> Catalogue {
    Catalogue::new(["east", "west"])
}

fn obj(name: &str, src: &str) -> Objective {
    Objective::parse(name, src, &cat()).unwrap_or_else(|e| panic!("{}", e.render(src)))
}

#[test]
fn the_documented_expressions_parse() {
    for src in [
        r#"IF FNMATCH("project/*/flame/*.clip",PATH) THEN {SLO('place-on-local-volumes')}"#,
        r#"IF FNMATCH("./hs-mount/project/*/flame/*.clip",PATH) THEN {SLO('place-on-local-volumes')}"#,
        "SLO('keep-online')",
        "SLO('place-on-east'), SLO('exclude-from-west')",
        "IF SIZE > 1GB && !HAS_LABEL(\"hero\") THEN {SLO('place-on-shared-object-volumes')} ELSE {SLO('keep-online')}",
        "IF LAST_MODIFIED_AGE > 30*DAYS THEN SLO('place-on-shared-object-volumes')",
        "if last_use_age >= 2 weeks || (size < 10MB && is_file) then {slo('keep-online')}",
        "IF HAS_KEYWORD('final') && IS_LIVE && !IS_DIRECTORY THEN {SLO('place-on-east'), SLO('keep-online')}",
        "IF SIZE / 2 + 1KB - 3 * 4B != 0 THEN SLO('keep-online')",
        "IF FNMATCH('*.exr', NAME) THEN SLO('place-on-west')",
        "IF -SIZE < 0.5 THEN SLO('keep-online')",
    ] {
        let o = Objective::parse("t", src, &cat());
        let o = match o {
            Ok(o) => o,
            Err(e) => panic!("{}", e.render(src)),
        };
        let again = Objective::parse("t", &o.source(), &cat()).unwrap();
        assert_eq!(again, o, "{src} → {}", o.source());
    }
}

#[test]
fn malformed_objectives_say_where_and_what() {
    let cases = [
        ("IF FNMATCH(\"a\", PATH) THEN", 1, 27, "SLO('name')"),
        (
            "IF SIZE > THEN SLO('keep-online')",
            1,
            11,
            "a condition or a number",
        ),
        ("IF SIZE THEN SLO('keep-online')", 1, 4, "a condition"),
        ("IF IS_FILE > 3 THEN SLO('keep-online')", 1, 4, "a number"),
        (
            "IF FNMATCH(\"a\", FILE) THEN SLO('keep-online')",
            1,
            17,
            "PATH or NAME",
        ),
        ("IF (SIZE > 1 THEN SLO('keep-online')", 1, 14, "`)`"),
        ("IF SIZE > 10XB THEN SLO('keep-online')", 1, 11, "a unit"),
        (
            "IF SIZE > 1\n  && THEN SLO('keep-online')",
            2,
            6,
            "a condition or a number",
        ),
        (
            "SLO('keep-online') SLO('x')",
            1,
            20,
            "the end of the objective",
        ),
        ("FNMATCH(\"a\", PATH)", 1, 1, "IF or SLO"),
        ("IF SIZE < 1 == 2 THEN SLO('keep-online')", 1, 13, "THEN"),
        (
            "IF SIZE > 1 THEN {SLO('keep-online') SLO('x')}",
            1,
            38,
            "`,` or `}`",
        ),
    ];
    for (src, line, col, expected) in cases {
        let e = match parser::parse(src) {
            Err(e) => e,
            Ok(_) => panic!("{src} parsed"),
        };
        assert_eq!((e.pos.line, e.pos.col), (line, col), "{src}: {e}");
        assert!(e.expected.contains(expected), "{src}: {e}");
        let shown = e.render(src);
        let caret_line = shown.lines().last().unwrap();
        assert_eq!(caret_line.find('^'), Some(col as usize + 1), "{shown}");
    }
}

#[test]
fn unknown_slos_are_refused_with_the_known_ones() {
    let src = "IF SIZE > 1GB THEN {SLO('place-on-north')}";
    let e = Objective::parse("t", src, &cat()).unwrap_err();
    let shown = e.render(src);
    assert!(shown.contains("unknown SLO 'place-on-north'"), "{shown}");
    assert!(shown.contains("place-on-east, place-on-west"), "{shown}");
    assert!(shown.ends_with("                        ^"), "{shown}");
    assert!(matches!(
        Objective::parse("bad name", "SLO('keep-online')", &cat()),
        Err(ObjectiveError::BadName(_))
    ));
    assert!(matches!(
        Objective::parse(
            "p",
            "IF FNMATCH('[a', PATH) THEN SLO('keep-online')",
            &cat()
        ),
        Err(ObjectiveError::Pattern { .. })
    ));
}

fn facts(path: &str) -> Facts<'_> {
    Facts {
        path,
        size: 1000,
        is_live: true,
        ..Default::default()
    }
}

fn root(names: &[&str]) -> (Level, Vec<String>) {
    (
        Level::Directory(String::new()),
        names.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn precedence_file_over_directory_over_share() {
    let objs = [
        obj(
            "clips-east",
            "IF FNMATCH('*.clip', NAME) THEN {SLO('place-on-east')}",
        ),
        obj("not-east", "SLO('exclude-from-east')"),
        obj(
            "old-shared",
            "IF LAST_MODIFIED_AGE > 30 DAYS THEN SLO('place-on-shared-object-volumes') ELSE SLO('place-on-local-volumes')",
        ),
        obj("online", "SLO('keep-online')"),
    ];
    let e = Engine::new(&objs, &[]).unwrap();
    let f = facts("project/PRJ/flame/SH010.clip");
    // Share says "not east", the flame directory says clips go east: the nearer level wins.
    let p = e.evaluate(
        &f,
        &e.in_force(&[
            (
                Level::Directory("project/PRJ/flame".into()),
                vec!["clips-east".into()],
            ),
            root(&["not-east", "old-shared"]),
        ]),
    );
    let slos: Vec<String> = p.slos.iter().map(|d| d.slo.to_string()).collect();
    assert_eq!(slos, ["place-on-east", "place-on-local-volumes"]);
    assert_eq!(p.overridden.len(), 1);
    assert_eq!(p.overridden[0].0.objective, "not-east");
    assert_eq!(p.slos[1].clause, Clause::Else);
    // The file's own objective beats both.
    let p = e.evaluate(
        &f,
        &e.in_force(&[
            (Level::File, vec!["not-east".into()]),
            (
                Level::Directory("project/PRJ/flame".into()),
                vec!["clips-east".into()],
            ),
        ]),
    );
    assert_eq!(p.slos[0].slo.to_string(), "exclude-from-east");
    assert_eq!(p.slos[0].level, Level::File);
    // Same level: the earlier attachment wins; duplicates are kept once.
    let p = e.evaluate(
        &f,
        &e.in_force(&[root(&["clips-east", "not-east", "online", "online"])]),
    );
    let slos: Vec<String> = p.slos.iter().map(|d| d.slo.to_string()).collect();
    assert_eq!(slos, ["place-on-east", "keep-online"]);
    // The fast path agrees with the explained one.
    let fast: Vec<String> = e
        .slos(
            &f,
            &e.in_force(&[root(&["clips-east", "not-east", "online"])]),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(fast, slos);
    // An IF without ELSE that does not hold yields nothing; old files go to shared volumes.
    let mut old = facts("renders/a.exr");
    old.last_modified_age = 31.0 * 86400.0;
    let p = e.evaluate(&old, &e.in_force(&[root(&["clips-east", "old-shared"])]));
    assert_eq!(p.evaluated[0].2, None);
    assert_eq!(p.slos[0].slo.to_string(), "place-on-shared-object-volumes");
}

#[test]
fn facts_reach_every_condition() {
    let e = Engine::new(
        &[
            obj("kw", "IF HAS_KEYWORD('final') THEN SLO('keep-online')"),
            obj(
                "lb",
                "IF HAS_LABEL('hero') && IS_FILE THEN SLO('place-on-west')",
            ),
            obj("dir", "IF IS_DIRECTORY THEN SLO('place-on-east')"),
            obj(
                "big",
                "IF SIZE >= 1MB THEN SLO('place-on-shared-object-volumes')",
            ),
            obj(
                "used",
                "IF LAST_USE_AGE < 1 HOUR THEN SLO('place-on-local-volumes')",
            ),
            obj("snap", "IF !IS_LIVE THEN SLO('exclude-from-west')"),
        ],
        &[],
    )
    .unwrap();
    let all = e.in_force(&[root(&["kw", "lb", "dir", "big", "used", "snap"])]);
    let kws = vec!["final".to_string()];
    let labels = vec!["hero".to_string()];
    let f = Facts {
        path: "a/b",
        size: 1 << 20,
        last_use_age: 10.0,
        last_modified_age: 0.0,
        keywords: &kws,
        labels: &labels,
        is_live: false,
        is_directory: false,
    };
    let got: Vec<String> = e.slos(&f, &all).iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "keep-online",
            "place-on-west",
            "place-on-shared-object-volumes"
        ]
    );
    // "used" and "snap" held too, but conflict with SLOs kept before them.
    let p = e.evaluate(&f, &all);
    let over: Vec<&str> = p
        .overridden
        .iter()
        .map(|(d, _)| d.objective.as_str())
        .collect();
    assert_eq!(over, ["used", "snap"]);
    let d = Facts {
        is_directory: true,
        size: 0,
        last_use_age: 7200.0,
        is_live: true,
        ..f.clone()
    };
    let got: Vec<String> = e.slos(&d, &all).iter().map(ToString::to_string).collect();
    assert_eq!(got, ["keep-online", "place-on-east"]);
}

#[test]
fn lint_finds_dead_branches_and_hopeless_patterns() {
    let shares = vec!["hs-mount".to_string()];
    let w = |src: &str| {
        lint::check(
            &parser::parse(src).unwrap().stmt,
            &shares,
            Some("/mnt/meridian"),
        )
    };
    assert!(w("IF SIZE >= 0 THEN SLO('a') ELSE SLO('b')")[0].contains("ELSE can never apply"));
    assert!(w("IF 1 > 2 THEN SLO('a')")[0].contains("THEN can never apply"));
    assert!(w("IF TRUE || IS_FILE THEN SLO('a')")[0].contains("without IF"));
    assert!(w("IF FNMATCH('a/*.exr', NAME) THEN SLO('a')")[0].contains("match PATH instead"));
    assert!(
        w("IF FNMATCH('/mnt/meridian/project/*', PATH) THEN SLO('a')")[0].contains("\"project/*\"")
    );
    assert!(w("IF FNMATCH('../x/*', PATH) THEN SLO('a')")[0].contains("'..'"));
    assert!(w("IF FNMATCH('a//b', PATH) THEN SLO('a')")[0].contains("empty components"));
    assert!(
        w("IF FNMATCH('./other-share/p/*', PATH) THEN SLO('a')")[0]
            .contains("not a declared share")
    );
    assert!(w("IF FNMATCH('./hs-mount/project/*/flame/*.clip', PATH) && SIZE < 1GB THEN SLO('a') ELSE SLO('b')").is_empty());
}

/// fnmatch(3) without FNM_PATHNAME: the reference the globset matcher must agree with.
fn reference(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|k| reference(&p[1..], &s[k..])),
        Some('?') => !s.is_empty() && reference(&p[1..], &s[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(2).position(|c| *c == ']').map(|i| i + 2) else {
                return !s.is_empty() && s[0] == '[' && reference(&p[1..], &s[1..]);
            };
            let (neg, set) = match p[1] {
                '!' => (true, &p[2..end]),
                _ => (false, &p[1..end]),
            };
            !s.is_empty() && (set.contains(&s[0]) != neg) && reference(&p[end + 1..], &s[1..])
        }
        Some(c) => s.first() == Some(c) && reference(&p[1..], &s[1..]),
    }
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("/".to_string()),
            Just(".".to_string()),
            Just("*".to_string()),
            Just("?".to_string()),
            Just("[ab]".to_string()),
            Just("[!a]".to_string()),
        ],
        0..8,
    )
    .prop_map(|v| v.concat())
    .prop_filter("`**` has globset's own meaning (docs)", |p| {
        !p.contains("**")
    })
}

fn cond_strategy() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Cond::Const),
        "[a-z*/.]{0,6}".prop_map(|p| Cond::FnMatch(p, Subject::Path)),
        "[a-z'\"\\\\]{0,4}".prop_map(Cond::HasKeyword),
        (0u32..1000).prop_map(|n| Cond::Cmp(
            crate::ast::CmpOp::Gt,
            Num::Var(crate::ast::NumVar::Size),
            Num::Arith(
                crate::ast::ArOp::Mul,
                Box::new(Num::Lit(n as f64)),
                Box::new(Num::Unit(crate::ast::Unit::Mb))
            ),
        )),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matcher_agrees_with_reference_fnmatch(p in pattern_strategy(), s in "[ab/.]{0,8}") {
        let set = pattern::PatternSet::new(&[(p.clone(), Subject::Path)]).unwrap();
        let want = reference(&p.chars().collect::<Vec<_>>(), &s.chars().collect::<Vec<_>>());
        prop_assert_eq!(set.matches(&s).get(0), want, "pattern {:?} path {:?}", p, s);
    }

    #[test]
    fn print_then_parse_is_identity(cond in cond_strategy(), els in any::<bool>()) {
        let stmt = Stmt::If {
            cond,
            then: vec!["keep-online".into()],
            els: els.then(|| vec!["place-on-east".into(), "exclude-from-west".into()]),
        };
        let src = stmt.to_string();
        let back = parser::parse(&src).map_err(|e| TestCaseError::fail(e.render(&src)))?;
        prop_assert_eq!(back.stmt, stmt);
    }

    #[test]
    fn parser_never_panics(src in "[ -~\n]{0,80}") {
        let _ = parser::parse(&src);
    }
}
