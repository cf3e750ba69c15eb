//! `/docs`: Swagger UI over `openapi.yaml`, served by the binary itself.
//!
//! Swagger UI comes from the npm package swagger-ui-dist, vendored at build
//! time into `assets/swagger/vendor/` (`make npm`), and is embedded with the
//! page and its start-up script (`assets/swagger/`) when the `docs` feature
//! is on and build.rs found the vendored files (cfg `swagger_ui`); otherwise
//! `/docs` answers 501 saying how to get it. Nothing is loaded from a CDN, and
//! the page's Content-Security-Policy allows this server only.
//!
//! `/docs` and its files need no key: they hold the public description of
//! the API and nothing else. The operations tried from the page need the key,
//! typed into Swagger's Authorize dialog (`tabagent token` prints it).

use crate::error::ApiError;

/// The page's policy: scripts, styles, images and requests from this server
/// only (Swagger UI sets inline styles; its images include `data:` URLs).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                       img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'none'";

/// The `servers` entry of openapi.yaml, and what the page's copy says instead:
/// a relative URL, so "Try it out" calls the server that served the page,
/// whatever its address and scheme.
const SERVERS: (&str, &str) = (
    "servers:\n  - url: http://127.0.0.1:8080\n",
    "servers:\n  - url: /\n",
);

/// One file of the page: its type and bytes.
pub struct Asset {
    /// The Content-Type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

#[cfg(all(feature = "docs", swagger_ui))]
mod embedded {
    pub const INDEX: &[u8] = include_bytes!("../../../assets/swagger/index.html");
    pub const INIT: &[u8] = include_bytes!("../../../assets/swagger/init.js");
    pub const BUNDLE: &[u8] = include_bytes!("../../../assets/swagger/vendor/swagger-ui-bundle.js");
    pub const CSS: &[u8] = include_bytes!("../../../assets/swagger/vendor/swagger-ui.css");
    pub const FAVICON: &[u8] = include_bytes!("../../../assets/swagger/vendor/favicon-32x32.png");
    pub const LICENSE: &[u8] = include_bytes!("../../../assets/swagger/vendor/LICENSE");
}

/// The description as the page loads it (see [`SERVERS`]).
pub fn page_openapi() -> String {
    super::OPENAPI.replacen(SERVERS.0, SERVERS.1, 1)
}

/// `GET /docs` (`file` empty) or `GET /docs/{file}`.
pub fn asset(file: &str) -> Result<Asset, ApiError> {
    if file == "openapi.yaml" {
        return Ok(Asset {
            content_type: "application/yaml",
            body: page_openapi().into_bytes(),
        });
    }
    embedded_asset(file)
}

#[cfg(all(feature = "docs", swagger_ui))]
fn embedded_asset(file: &str) -> Result<Asset, ApiError> {
    let (content_type, body) = match file {
        "" => ("text/html; charset=utf-8", embedded::INDEX),
        "init.js" => ("text/javascript; charset=utf-8", embedded::INIT),
        "swagger-ui-bundle.js" => ("text/javascript; charset=utf-8", embedded::BUNDLE),
        "swagger-ui.css" => ("text/css; charset=utf-8", embedded::CSS),
        "favicon-32x32.png" => ("image/png", embedded::FAVICON),
        "LICENSE" => ("text/plain; charset=utf-8", embedded::LICENSE),
        other => return Err(ApiError::not_found(format!("no file /docs/{other}"))),
    };
    Ok(Asset {
        content_type,
        body: body.to_vec(),
    })
}

#[cfg(not(all(feature = "docs", swagger_ui)))]
fn embedded_asset(_file: &str) -> Result<Asset, ApiError> {
    Err(ApiError::not_implemented(
        "the API page (Swagger UI) is not in this build: build with the docs feature after \
         `make npm` has vendored swagger-ui-dist; /openapi.yaml has the description",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_calls_the_server_that_served_it() {
        assert!(super::super::OPENAPI.contains(SERVERS.0));
        let page = page_openapi();
        assert!(page.contains(SERVERS.1));
        assert!(!page.contains("127.0.0.1:8080"));
    }

    #[cfg(all(feature = "docs", swagger_ui))]
    #[test]
    fn the_page_and_its_files_are_embedded() {
        let page = asset("").unwrap();
        let html = String::from_utf8(page.body).unwrap();
        for file in [
            "swagger-ui-bundle.js",
            "swagger-ui.css",
            "init.js",
            "favicon-32x32.png",
        ] {
            assert!(html.contains(&format!("/docs/{file}")), "{file}");
            assert!(asset(file).unwrap().body.len() > 100, "{file}");
        }
        assert!(!html.contains("://"), "no external URL: {html}");
        assert_eq!(asset("nope").err().unwrap().status, 404);
    }
}
