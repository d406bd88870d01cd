//! The pages' styles and scripts, embedded at compile time and served with a content hash in
//! their path, so a phone keeps them until they change and never fetches anything elsewhere.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    /// Kept by the cadre pages' service worker for use without a network; the office's
    /// larger assets are left to the browser's cache.
    phone: bool,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        phone: true,
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/static/app.css"),
    },
    Asset {
        name: "m.js",
        phone: true,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/m.js"),
    },
    Asset {
        name: "signature_pad.js",
        phone: true,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!(
            "../../web/static/vendor/signature_pad-5.1.4/signature_pad.umd.min.js"
        ),
    },
    // The office pages.
    Asset {
        name: "office.css",
        phone: false,
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/static/office.css"),
    },
    // The dashboard.
    Asset {
        name: "dashboard.js",
        phone: false,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/dashboard.js"),
    },
    Asset {
        name: "uplot.js",
        phone: false,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/vendor/uplot-1.6.32/uPlot.iife.min.js"),
    },
    Asset {
        name: "uplot.css",
        phone: false,
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/static/vendor/uplot-1.6.32/uPlot.min.css"),
    },
    // Refusal review and audit.

    // Campaign set-up, institutions, users.
    Asset {
        name: "setup.js",
        phone: false,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/setup.js"),
    },
    // Imports, waves, clinic.
    Asset {
        name: "ops.js",
        phone: false,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/ops.js"),
    },
    // The API browser.
    Asset {
        name: "swagger-ui-bundle.js",
        phone: false,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!(
            "../../web/static/vendor/swagger-ui-dist-5.36.0/swagger-ui-bundle.js"
        ),
    },
    Asset {
        name: "swagger-ui.css",
        phone: false,
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/static/vendor/swagger-ui-dist-5.36.0/swagger-ui.css"),
    },
    Asset {
        name: "apidocs.js",
        phone: false,
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/static/apidocs.js"),
    },
];

/// Each asset's path under `/static/`, with the first hex digits of its SHA-256 in the name.
static VERSIONED: LazyLock<Vec<(String, &'static Asset)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            let (stem, ext) = asset.name.rsplit_once('.').unwrap_or((asset.name, ""));
            (format!("{stem}.{hash}.{ext}"), asset)
        })
        .collect()
});

/// The URL of an asset by its plain name (`app.css` → `/static/app.1a2b3c4d5e6f.css`).
pub fn url(name: &str) -> String {
    VERSIONED
        .iter()
        .find(|(_, asset)| asset.name == name)
        .map(|(path, _)| format!("/static/{path}"))
        .unwrap_or_else(|| format!("/static/{name}"))
}

/// `GET /static/{file}`: an embedded asset, cached for a year (its name changes with it).
pub async fn serve(Path(file): Path<String>) -> Response {
    match VERSIONED.iter().find(|(path, _)| *path == file) {
        Some((_, asset)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(asset.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            asset.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /m/sw.js`: the cadre pages' service worker, served from the path it controls and
/// never cached by the browser (a new one must be seen at once), with the assets it keeps.
pub async fn service_worker() -> Response {
    static SCRIPT: LazyLock<String> = LazyLock::new(|| {
        let assets: Vec<String> = ASSETS
            .iter()
            .filter(|a| a.phone)
            .map(|a| url(a.name))
            .collect();
        format!(
            "var ASSETS = {};\n{}",
            serde_json::to_string(&assets).unwrap_or_else(|_| "[]".to_owned()),
            include_str!("../../web/static/sw.js")
        )
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        SCRIPT.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_versioned_url_that_changes_with_its_bytes() {
        for asset in ASSETS {
            let url = url(asset.name);
            assert!(url.starts_with("/static/"), "{url}");
            assert_ne!(url, format!("/static/{}", asset.name));
        }
    }
}
