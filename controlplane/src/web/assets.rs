//! The page of `beeline web`, built into the binary: nothing is fetched at run time.

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");
/// Cytoscape.js 3.35.0 (MIT, see assets/cytoscape/LICENSE), vendored from npm.
pub const CYTOSCAPE_JS: &str = include_str!("assets/cytoscape/cytoscape.min.js");
