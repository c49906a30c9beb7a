//! The demo page and the browser SDK bundle, embedded in the binary. Built by `clients/js`
//! (`npm run build`); a check there fails when the committed bundle is stale.

pub struct Asset {
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[(&str, Asset)] = &[
    (
        "/index.html",
        Asset {
            content_type: "text/html; charset=utf-8",
            bytes: include_bytes!("../../clients/js/demo/index.html"),
        },
    ),
    (
        "/demo.js",
        Asset {
            content_type: JS,
            bytes: include_bytes!("../../clients/js/dist/demo.js"),
        },
    ),
    (
        "/signalgate.js",
        Asset {
            content_type: JS,
            bytes: include_bytes!("../../clients/js/dist/signalgate.js"),
        },
    ),
];

pub fn get(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| a)
}
