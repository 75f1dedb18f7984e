//! `X-Twilio-Signature` validation: HMAC-SHA1 of the public URL (plus sorted form parameters)
//! with the account auth token, compared in constant time; JSON bodies are covered by the
//! `bodySHA256` query parameter. Also computes signatures (the test stand-in signs with it).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header Twilio signs its requests with.
pub const HEADER: &str = "X-Twilio-Signature";
/// Query parameter carrying the hex SHA-256 of a JSON body.
pub const BODY_SHA256: &str = "bodySHA256";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no X-Twilio-Signature header")]
    Missing,
    #[error("the X-Twilio-Signature does not match the request")]
    Mismatch,
    #[error("the request has a body but no bodySHA256 query parameter")]
    BodyHashMissing,
    #[error("the body does not match its bodySHA256")]
    BodyHashMismatch,
}

/// The URL Twilio requested, rebuilt from the configured public base URL (never from the
/// socket: a proxy may sit in between) and the request's path and query.
pub fn webhook_url(public_base_url: &str, path_and_query: &str) -> String {
    let base = public_base_url.trim_end_matches('/');
    if path_and_query.starts_with('/') {
        format!("{base}{path_and_query}")
    } else {
        format!("{base}/{path_and_query}")
    }
}

fn mac(auth_token: &str, url: &str, params: &[(&str, &str)]) -> Hmac<Sha1> {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    // By name, and for repeated names by value (byte order, as Twilio's validators do).
    sorted.sort_unstable();
    let mut m = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    m.update(url.as_bytes());
    for (name, value) in sorted {
        m.update(name.as_bytes());
        m.update(value.as_bytes());
    }
    m
}

/// The signature Twilio sends for a request to `url` with these form parameters
/// (none for JSON bodies or GETs).
pub fn compute(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    BASE64.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Hex SHA-256 of a body, as in `bodySHA256`.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// `url` as given, with the scheme's default port added, and with any port removed: Twilio's
/// own validators accept all three, since proxies and Twilio disagree about ports.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    // The port is after the last ':' that is not inside an IPv6 literal.
    let host_end = hostport.rfind(']').map(|i| i + 1).unwrap_or(0);
    let (host, port) = match hostport[host_end..].rfind(':') {
        Some(i) => (
            &hostport[..host_end + i],
            Some(&hostport[host_end + i + 1..]),
        ),
        None => (hostport, None),
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    };
    let rebuild = |port: Option<&str>| match port {
        Some(p) => format!("{scheme}://{userinfo}{host}:{p}{tail}"),
        None => format!("{scheme}://{userinfo}{host}{tail}"),
    };
    match port {
        Some(_) => out.push(rebuild(None)),
        None => {
            if let Some(p) = default_port {
                out.push(rebuild(Some(p)));
            }
        }
    }
    out.dedup();
    out
}

fn decode(signature: &str) -> Option<Vec<u8>> {
    BASE64.decode(signature.trim()).ok()
}

fn matches_any(auth_token: &str, url: &str, params: &[(&str, &str)], signature: &str) -> bool {
    let Some(given) = decode(signature) else {
        return false;
    };
    // Check every variant (no early exit), so timing does not tell which one matched.
    let mut ok = subtle::Choice::from(0);
    for variant in url_variants(url) {
        let expected = mac(auth_token, &variant, params).finalize().into_bytes();
        ok |= expected.as_slice().ct_eq(&given);
    }
    ok.into()
}

/// Validates a form-encoded request (or one without a body, with `params` empty).
pub fn validate_form(
    auth_token: &str,
    url: &str,
    params: &[(&str, &str)],
    signature: &str,
) -> Result<(), SignatureError> {
    if matches_any(auth_token, url, params, signature) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Validates a request with a JSON (or other non-form) body: the signature covers the URL
/// alone, and the URL's `bodySHA256` must be the body's hash.
pub fn validate_body(
    auth_token: &str,
    url: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let claimed = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == BODY_SHA256)
        .map(|(_, v)| v.to_ascii_lowercase())
        .ok_or(SignatureError::BodyHashMissing)?;
    let signature_ok = matches_any(auth_token, url, &[], signature);
    let body_ok: bool = body_sha256_hex(body)
        .as_bytes()
        .ct_eq(claimed.as_bytes())
        .into();
    match (signature_ok, body_ok) {
        (false, _) => Err(SignatureError::Mismatch),
        (true, false) => Err(SignatureError::BodyHashMismatch),
        (true, true) => Ok(()),
    }
}

/// Validates a webhook request as received: rebuilds the URL from `public_base_url` and the
/// request's path and query, then checks form parameters or the body hash.
pub fn verify_request(
    auth_token: &str,
    public_base_url: &str,
    path_and_query: &str,
    signature: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let url = webhook_url(public_base_url, path_and_query);
    let is_form = content_type.is_some_and(|c| {
        c.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if is_form {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let params: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        validate_form(auth_token, &url, &params, signature)
    } else if body.is_empty() && !url.contains(BODY_SHA256) {
        validate_form(auth_token, &url, &[], signature)
    } else {
        validate_body(auth_token, &url, body, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
    }

    #[test]
    fn the_published_example_signs_and_validates() {
        assert_eq!(
            compute(TOKEN, URL, &params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        let mut shuffled = params();
        shuffled.reverse();
        assert_eq!(
            validate_form(TOKEN, URL, &shuffled, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            Ok(())
        );
    }

    #[test]
    fn any_tampering_is_a_mismatch() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let mut changed = params();
        changed[2] = ("Digits", "1235");
        assert_eq!(
            validate_form(TOKEN, URL, &changed, good),
            Err(SignatureError::Mismatch)
        );
        let mut extra = params();
        extra.push(("CallStatus", "ringing"));
        assert_eq!(
            validate_form(TOKEN, URL, &extra, good),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate_form(
                TOKEN,
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params(),
                good
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate_form("54321", URL, &params(), good),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "not base64!", "RSOYDt4T1cUTdK1PDd93/VVr8B8", "AAAA"] {
            assert_eq!(
                validate_form(TOKEN, URL, &params(), bad),
                Err(SignatureError::Mismatch),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_url_with_the_default_port_or_without_its_port_validates() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        // Twilio signed with :443, we are configured without a port.
        let sig = compute(TOKEN, with_port, &params());
        assert_eq!(validate_form(TOKEN, URL, &params(), &sig), Ok(()));
        // Twilio signed without a port, we are configured with :443.
        let sig = compute(TOKEN, URL, &params());
        assert_eq!(validate_form(TOKEN, with_port, &params(), &sig), Ok(()));
        // A non-default port configured; Twilio signed without it.
        let sig = compute(TOKEN, "http://cp.example.com/hook", &[]);
        assert_eq!(
            validate_form(TOKEN, "http://cp.example.com:8080/hook", &[], &sig),
            Ok(())
        );
        // ...but another host never matches.
        assert_eq!(
            validate_form(TOKEN, "http://cp.example.org:8080/hook", &[], &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn url_variants_keep_everything_but_the_port() {
        assert_eq!(
            url_variants("https://u:p@h.example/a?b=1"),
            vec![
                "https://u:p@h.example/a?b=1",
                "https://u:p@h.example:443/a?b=1"
            ]
        );
        assert_eq!(
            url_variants("http://[::1]:8080/x"),
            vec!["http://[::1]:8080/x", "http://[::1]/x"]
        );
        assert_eq!(
            url_variants("http://127.0.0.1:80"),
            vec!["http://127.0.0.1:80", "http://127.0.0.1"]
        );
    }

    #[test]
    fn repeated_parameters_are_signed_with_their_values_sorted() {
        let url = "https://cp.example.com/webhooks/twilio/call-status";
        let params = [
            ("StatusCallbackEvent", "ringing"),
            ("To", "+18005551212"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ];
        // Built by hand: names sorted, values of a repeated name sorted, no separators.
        let data = format!(
            "{url}StatusCallbackEventansweredStatusCallbackEventcompletedStatusCallbackEventringingTo+18005551212"
        );
        let mut m = Hmac::<Sha1>::new_from_slice(TOKEN.as_bytes()).unwrap();
        m.update(data.as_bytes());
        let expected = BASE64.encode(m.finalize().into_bytes());
        assert_eq!(compute(TOKEN, url, &params), expected);
        assert_eq!(validate_form(TOKEN, url, &params, &expected), Ok(()));
    }

    #[test]
    fn json_bodies_are_covered_by_their_body_hash() {
        // Published vector of Twilio's helper libraries.
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = body_sha256_hex(body);
        assert_eq!(
            hash,
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let url = format!("{URL}&bodySHA256={hash}");
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(compute(TOKEN, &url, &[]), sig);
        assert_eq!(validate_body(TOKEN, &url, body, sig), Ok(()));
        assert_eq!(
            validate_body(
                TOKEN,
                &url,
                br#"{"property": "value", "boolean": false}"#,
                sig
            ),
            Err(SignatureError::BodyHashMismatch)
        );
        assert_eq!(
            validate_body(TOKEN, URL, body, &compute(TOKEN, URL, &[])),
            Err(SignatureError::BodyHashMissing)
        );
        let other = format!("{URL}&bodySHA256={}", body_sha256_hex(b"{}"));
        assert_eq!(
            validate_body(TOKEN, &other, b"{}", sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_request_is_checked_against_the_public_base_url() {
        let base = "https://cp.example.com/";
        let path = "/webhooks/twilio/incoming-call?tenant=a%20b";
        let form = "CallSid=CA1&From=%2B14158675309&To=%2B18005551212&Note=a%26b";
        let sig = compute(
            "tok",
            "https://cp.example.com/webhooks/twilio/incoming-call?tenant=a%20b",
            &[
                ("CallSid", "CA1"),
                ("From", "+14158675309"),
                ("To", "+18005551212"),
                ("Note", "a&b"),
            ],
        );
        let ct = Some("application/x-www-form-urlencoded; charset=utf-8");
        assert_eq!(
            verify_request("tok", base, path, Some(&sig), ct, form.as_bytes()),
            Ok(())
        );
        assert_eq!(
            verify_request("tok", base, path, None, ct, form.as_bytes()),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_request(
                "tok",
                "https://evil.example.com",
                path,
                Some(&sig),
                ct,
                form.as_bytes()
            ),
            Err(SignatureError::Mismatch)
        );
        let tampered = form.replace("a%26b", "a%26c");
        assert_eq!(
            verify_request("tok", base, path, Some(&sig), ct, tampered.as_bytes()),
            Err(SignatureError::Mismatch)
        );
        // A JSON body goes through bodySHA256.
        let body = br#"{"a":1}"#;
        let path = format!("/webhooks/x?bodySHA256={}", body_sha256_hex(body));
        let sig = compute("tok", &webhook_url(base, &path), &[]);
        assert_eq!(
            verify_request(
                "tok",
                base,
                &path,
                Some(&sig),
                Some("application/json"),
                body
            ),
            Ok(())
        );
        assert_eq!(
            verify_request(
                "tok",
                base,
                "/webhooks/x",
                Some(&sig),
                Some("application/json"),
                body
            ),
            Err(SignatureError::BodyHashMissing)
        );
    }
}
