//! HMAC-SHA256 signatures over a timestamp and a body: how instances of a scaled-out group
//! prove a request comes from the group (`scale_out.cluster_secret`). The header value is
//! `t=<ms since the epoch>,v1=<hex HMAC-SHA256 of "<t>.<body>">`; a signature older or newer
//! than [`MAX_SKEW_MS`] is refused, so a recorded request cannot be replayed later.

use sha2::{Digest, Sha256};

/// The header that carries the signature.
pub const HEADER: &str = "x-streamtally-signature";
/// How far a signature's time may be from the receiver's clock.
pub const MAX_SKEW_MS: i64 = 60_000;

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in msg {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header value signing `body` at `now_ms`.
pub fn header_value(secret: &str, now_ms: i64, body: &[u8]) -> String {
    let t = now_ms.to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex(&mac))
}

/// Checks a header value against `body` at `now_ms`; the error says what is wrong (never
/// the expected signature).
pub fn verify(secret: &str, now_ms: i64, value: &str, body: &[u8]) -> Result<(), String> {
    let mut t = None;
    let mut v1 = None;
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(format!("{HEADER} must be t=<ms>,v1=<hex>"));
    };
    let at: i64 = t
        .parse()
        .map_err(|_| format!("{HEADER}: t {t:?} is not a time in ms"))?;
    if (now_ms - at).abs() > MAX_SKEW_MS {
        return Err(format!(
            "{HEADER}: signed at {at}, {} ms from this instance's clock (at most {MAX_SKEW_MS})",
            now_ms - at
        ));
    }
    let want = hex(&hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body]));
    // Compared without an early exit, so the time taken says nothing of the expected value.
    let same = want.len() == v1.len()
        && want
            .bytes()
            .zip(v1.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(format!(
            "{HEADER}: the signature does not match (is scale_out.cluster_secret the same on \
             every instance?)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4231_test_cases() {
        // Test case 2: key "Jefe".
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let key = [0xaa; 131];
        let mac = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_changed_body_secret_or_time_is_refused() {
        let v = header_value("s3cret-s3cret-s3cret", 1_000_000, b"{\"a\":1}");
        assert!(verify("s3cret-s3cret-s3cret", 1_000_500, &v, b"{\"a\":1}").is_ok());
        assert!(verify("s3cret-s3cret-s3cret", 1_000_500, &v, b"{\"a\":2}").is_err());
        assert!(verify("other-secret-other", 1_000_500, &v, b"{\"a\":1}").is_err());
        let late = verify(
            "s3cret-s3cret-s3cret",
            1_000_000 + MAX_SKEW_MS + 1,
            &v,
            b"{\"a\":1}",
        );
        assert!(late.unwrap_err().contains("from this instance's clock"));
        assert!(verify("s", 0, "garbage", b"")
            .unwrap_err()
            .contains("t=<ms>"));
    }
}
