//! The objective parser: any text either parses or gives an error whose position lies in
//! the text; what parses prints back to source that parses to the same statement, and
//! compiles and evaluates without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_objectives::{Catalogue, Engine, Facts, Level, Objective, parser};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    match parser::parse(src) {
        Err(e) => {
            let lines = src.lines().count().max(1) as u32;
            assert!(e.pos.line >= 1 && e.pos.line <= lines + 1, "{e}");
            let _ = e.render(src);
        }
        Ok(p) => {
            let printed = p.stmt.to_string();
            let again = parser::parse(&printed).expect("printed source parses");
            assert_eq!(again.stmt, p.stmt, "{printed}");
            let cat = Catalogue::new(["east"]);
            if let Ok(o) = Objective::parse("f", src, &cat)
                && let Ok(engine) = Engine::new(std::slice::from_ref(&o), &[])
            {
                let in_force = engine.in_force(&[(Level::File, vec!["f".into()])]);
                let f = Facts { path: "project/a/b.clip", ..Default::default() };
                let _ = engine.evaluate(&f, &in_force);
            }
        }
    }
});
