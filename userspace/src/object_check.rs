//! Does an eBPF object hold the maps and programs the loader expects? Used by
//! `build.rs` (which fails the build otherwise) and by a unit test.
//!
//! Deliberately dependency-light (only `object`): `build.rs` includes this file.

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// What the object lacks, as `"map NAME"` / `"program NAME"`; empty when complete.
/// Errors when the bytes are not an ELF object at all.
pub fn missing(data: &[u8], maps: &[&str], programs: &[&str]) -> Result<Vec<String>, String> {
    let obj = object::File::parse(data).map_err(|e| format!("not an ELF object: {e}"))?;
    let maps_section = obj.section_by_name("maps").map(|s| s.index());
    let mut missing = Vec::new();
    for name in maps {
        let found = obj.symbols().any(|s| {
            s.name() == Ok(*name) && maps_section.is_some() && s.section_index() == maps_section
        });
        if !found {
            missing.push(format!("map {name}"));
        }
    }
    for name in programs {
        let found = obj.symbols().any(|s| {
            s.name() == Ok(*name)
                && s.section_index()
                    .and_then(|i| obj.section_by_index(i).ok())
                    .is_some_and(|sec| sec.name().is_ok_and(|n| n.starts_with("xdp")))
        });
        if !found {
            missing.push(format!("program {name}"));
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use geodns_common::{MAP_NAMES, PROGRAM_NAMES};

    use super::missing;

    #[test]
    fn embedded_object_is_complete() {
        let gaps = missing(crate::XDP_OBJECT, MAP_NAMES, PROGRAM_NAMES).expect("ELF");
        assert!(gaps.is_empty(), "embedded object lacks {gaps:?}");
    }

    #[test]
    fn a_missing_map_or_program_is_named() {
        let gaps =
            missing(crate::XDP_OBJECT, &["STATE", "NO_SUCH_MAP"], &["xdp_nope"]).expect("ELF");
        assert_eq!(gaps, ["map NO_SUCH_MAP", "program xdp_nope"]);
    }

    #[test]
    fn a_truncated_object_is_rejected() {
        // katran #260: a broken BPF build once produced a 400-byte ELF.
        let short = &crate::XDP_OBJECT[..400];
        let result = missing(short, MAP_NAMES, PROGRAM_NAMES);
        assert!(
            result.is_err() || !result.as_ref().is_ok_and(Vec::is_empty),
            "a 400-byte object passed the check: {result:?}"
        );
    }
}
