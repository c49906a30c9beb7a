//! The claims of a token whose signature verified: their types and sizes, then the times,
//! the audience and the issuer. Every rule about a claim lives here, for verification and for
//! minting alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{AuthRefusal, RoomGrant, VerifiedToken};

/// Longest `sub`, in bytes.
pub const MAX_SUB_BYTES: usize = 128;
/// Longest `device`, in bytes.
pub const MAX_DEVICE_BYTES: usize = 64;
/// Longest `name`, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest `metadata`, in bytes of its compact JSON text.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Most entries in `rooms`.
pub const MAX_ROOM_GRANTS: usize = 256;
/// Longest room name or prefix in `rooms` (without the trailing `*`), in bytes.
pub const MAX_ROOM_GRANT_BYTES: usize = 64;

/// What the configuration asks of the claims besides their shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRules<'a> {
    pub leeway: Duration,
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
}

fn malformed(message: String) -> AuthRefusal {
    AuthRefusal::Malformed(message)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A present, non-null claim.
fn get<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).filter(|v| !v.is_null())
}

fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<SystemTime>, AuthRefusal> {
    let Some(value) = get(claims, name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(malformed(format!(
            "{name} must be a NumericDate (seconds since 1970), not {}",
            json_type(value)
        )));
    };
    let since_epoch = match (number.as_u64(), number.as_f64()) {
        (Some(secs), _) => Duration::from_secs(secs),
        (None, Some(secs)) if secs.is_finite() && secs >= 0.0 => Duration::try_from_secs_f64(secs)
            .map_err(|_| malformed(format!("{name} is out of range")))?,
        _ => {
            return Err(malformed(format!(
                "{name} is negative or not a finite number"
            )));
        }
    };
    UNIX_EPOCH
        .checked_add(since_epoch)
        .map(Some)
        .ok_or_else(|| malformed(format!("{name} is out of range")))
}

fn string<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
    max_bytes: usize,
) -> Result<Option<&'a str>, AuthRefusal> {
    let Some(value) = get(claims, name) else {
        return Ok(None);
    };
    let Value::String(text) = value else {
        return Err(malformed(format!(
            "{name} must be a string, not {}",
            json_type(value)
        )));
    };
    if text.len() > max_bytes {
        return Err(malformed(format!(
            "{name} is {} bytes long, more than {max_bytes}",
            text.len()
        )));
    }
    Ok(Some(text))
}

/// `sub` and `device` name an identity: non-empty, no control characters.
fn identity_string<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
    max_bytes: usize,
) -> Result<Option<&'a str>, AuthRefusal> {
    let text = string(claims, name, max_bytes)?;
    match text {
        Some("") => Err(malformed(format!("{name} is empty"))),
        Some(t) if t.chars().any(char::is_control) => {
            Err(malformed(format!("{name} contains control characters")))
        }
        other => Ok(other),
    }
}

/// `rooms`: absent grants nothing; `"*"` grants every room; `"team-*"` every room whose name
/// starts with `team-`; anything else that one room.
fn room_grants(claims: &Map<String, Value>) -> Result<Vec<RoomGrant>, AuthRefusal> {
    let Some(value) = get(claims, "rooms") else {
        return Ok(Vec::new());
    };
    let Value::Array(entries) = value else {
        return Err(malformed(format!(
            "rooms must be an array of strings, not {}",
            json_type(value)
        )));
    };
    if entries.len() > MAX_ROOM_GRANTS {
        return Err(malformed(format!(
            "rooms has {} entries, more than {MAX_ROOM_GRANTS}",
            entries.len()
        )));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::String(entry) = entry else {
                return Err(malformed(format!(
                    "rooms[{i}] must be a string, not {}",
                    json_type(entry)
                )));
            };
            let (name, grant) = match entry.strip_suffix('*') {
                Some("") => return Ok(RoomGrant::Any),
                Some(prefix) => (prefix, RoomGrant::Prefix(prefix.to_owned())),
                None => (entry.as_str(), RoomGrant::Exact(entry.clone())),
            };
            if name.is_empty() {
                return Err(malformed(format!("rooms[{i}] is empty")));
            }
            if name.contains('*') {
                return Err(malformed(format!(
                    "rooms[{i}] has a '*' that is not its last character"
                )));
            }
            if name.len() > MAX_ROOM_GRANT_BYTES {
                return Err(malformed(format!(
                    "rooms[{i}] is {} bytes long, more than {MAX_ROOM_GRANT_BYTES}",
                    name.len()
                )));
            }
            Ok(grant)
        })
        .collect()
}

/// `aud`: one string or an array of strings.
fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, AuthRefusal> {
    match get(claims, "aud") {
        None => Ok(Vec::new()),
        Some(Value::String(aud)) => Ok(vec![aud.as_str()]),
        Some(Value::Array(entries)) => entries
            .iter()
            .map(|entry| {
                entry.as_str().ok_or_else(|| {
                    malformed(format!(
                        "aud must be a string or an array of strings; it holds {}",
                        json_type(entry)
                    ))
                })
            })
            .collect(),
        Some(other) => Err(malformed(format!(
            "aud must be a string or an array of strings, not {}",
            json_type(other)
        ))),
    }
}

/// Checks the claims of a token whose signature verified. Order: shape (`Malformed`), then
/// `exp`, `nbf` and `iat` against `now` with the leeway, then audience and issuer.
pub(crate) fn check(
    claims: &Map<String, Value>,
    rules: ClaimRules<'_>,
    now: SystemTime,
) -> Result<VerifiedToken, AuthRefusal> {
    let sub = identity_string(claims, "sub", MAX_SUB_BYTES)?
        .ok_or_else(|| malformed("sub (the identity) is missing".to_owned()))?;
    let expires_at = numeric_date(claims, "exp")?
        .ok_or_else(|| malformed("exp (the expiry time) is missing".to_owned()))?;
    let not_before = numeric_date(claims, "nbf")?;
    let issued_at = numeric_date(claims, "iat")?;
    let audiences = audiences(claims)?;
    let issuer = string(claims, "iss", 1024)?;
    let rooms = room_grants(claims)?;
    let signal = match get(claims, "signal") {
        None => true,
        Some(Value::Bool(signal)) => *signal,
        Some(other) => {
            return Err(malformed(format!(
                "signal must be a boolean, not {}",
                json_type(other)
            )));
        }
    };
    let device = identity_string(claims, "device", MAX_DEVICE_BYTES)?;
    let name = string(claims, "name", MAX_NAME_BYTES)?;
    let metadata = match get(claims, "metadata") {
        None => String::new(),
        Some(value) => {
            let text = serde_json::to_string(value)
                .map_err(|_| malformed("metadata cannot be written as JSON".to_owned()))?;
            if text.len() > MAX_METADATA_BYTES {
                return Err(malformed(format!(
                    "metadata is {} bytes long as compact JSON, more than {MAX_METADATA_BYTES}",
                    text.len()
                )));
            }
            text
        }
    };

    // A time past the end of SystemTime's range is "never".
    let past = |t: SystemTime| t.checked_add(rules.leeway).is_some_and(|t| now >= t);
    let future = |t: SystemTime| now.checked_add(rules.leeway).is_some_and(|now| t > now);
    if past(expires_at) {
        return Err(AuthRefusal::Expired);
    }
    if not_before.is_some_and(future) || issued_at.is_some_and(future) {
        return Err(AuthRefusal::NotYetValid);
    }
    if let Some(expected) = rules.audience
        && !audiences.contains(&expected)
    {
        return Err(AuthRefusal::WrongAudience);
    }
    if let Some(expected) = rules.issuer
        && issuer != Some(expected)
    {
        return Err(AuthRefusal::WrongIssuer);
    }
    Ok(VerifiedToken {
        sub: sub.to_owned(),
        device: device.map(str::to_owned),
        expires_at,
        issued_at,
        rooms,
        signal,
        name: name.unwrap_or_default().to_owned(),
        metadata,
    })
}
