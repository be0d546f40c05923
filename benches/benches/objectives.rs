//! Objective evaluation throughput: 100 objectives in force at the share root, evaluated
//! over generated Shot Publish paths (publish folders, `.clip` files, batch setups, EXR
//! renders). The target is 1 million path evaluations per second on one core: read the
//! `elem/s` figure criterion prints (one element = one path's full placement).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_objectives::{Catalogue, Engine, Facts, Level, Objective};
use std::hint::black_box;

/// 100 objectives of the kinds a studio writes: per-show clip placement, per-site renders,
/// age and size rules, keywords and labels.
fn objectives(cat: &Catalogue) -> Vec<Objective> {
    let mut out = Vec::new();
    for i in 0..100 {
        let src = match i % 5 {
            0 => format!(
                "IF FNMATCH(\"project/PRJ{i}/flame/*.clip\", PATH) THEN {{SLO('place-on-east')}}"
            ),
            1 => format!(
                "IF FNMATCH(\"project/PRJ{i}/renders/*.exr\", PATH) && SIZE > 10MB THEN {{SLO('place-on-west')}} ELSE {{SLO('keep-online')}}"
            ),
            2 => format!(
                "IF FNMATCH(\"project/PRJ{i}/*/batch/*.batch\", PATH) THEN SLO('place-on-local-volumes')"
            ),
            3 => format!(
                "IF LAST_MODIFIED_AGE > {} * DAYS && FNMATCH(\"*_v0*\", NAME) THEN SLO('place-on-shared-object-volumes')",
                30 + i
            ),
            _ => format!(
                "IF HAS_KEYWORD(\"hero{i}\") || HAS_LABEL(\"final\") THEN SLO('exclude-from-west')"
            ),
        };
        out.push(Objective::parse(&format!("o{i}"), &src, cat).unwrap());
    }
    out
}

/// Shot Publish paths over 100 projects.
fn paths() -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..100 {
        for s in 0..10 {
            let shot = format!("project/PRJ{p}/flame/SH{s:03}0");
            out.push(format!("project/PRJ{p}/flame/SH{s:03}0.clip"));
            out.push(format!(
                "{shot}/batch/SH{s:03}0_comp_v00{}.batch",
                s % 9 + 1
            ));
            out.push(format!(
                "project/PRJ{p}/renders/SH{s:03}0_comp_v003.{:04}.exr",
                1001 + s
            ));
            out.push(format!("{shot}/plates/SH{s:03}0_plate.{:04}.dpx", 1001 + s));
        }
    }
    out
}

fn evaluate(c: &mut Criterion) {
    let cat = Catalogue::new(["east", "west"]);
    let objs = objectives(&cat);
    let engine = Engine::new(&objs, &["hs-mount".to_string()]).unwrap();
    let in_force = engine.in_force(&[(
        Level::Directory(String::new()),
        objs.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
    )]);
    let paths = paths();
    let kws = vec!["hero7".to_string()];
    let mut g = c.benchmark_group("objectives");
    g.throughput(Throughput::Elements(paths.len() as u64));
    g.bench_function("100 objectives, placement of one path", |b| {
        b.iter(|| {
            for p in &paths {
                let f = Facts {
                    path: p,
                    size: 50 << 20,
                    last_modified_age: 40.0 * 86400.0,
                    keywords: &kws,
                    is_live: true,
                    ..Default::default()
                };
                black_box(engine.slos(black_box(&f), &in_force));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
