//! Writes the demo `GeoIP` databases and BGP RIB dump into `examples/` at the workspace root.
//! `cargo run -p geodns-maps --example make-demo-db`
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for (name, bytes) in geodns_maps::mmdb::demo::databases().expect("build the demo databases") {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
}
